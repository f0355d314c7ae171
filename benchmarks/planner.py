"""Planner quality and speed at 8 GPUs x 64 replicas, against an optimum computed without the planner.

    python benchmarks/planner.py [--cases 20] [--seed 1] [--ref-time 40] [--families a,b]
                                 [--budget S] [--polish-moves N] [--per-case]

Families (seeded; every case but "small" is 8 GPUs, MI300X / MI325X mixed, and 64 replicas of
models of priority 0-9, up to 8 replicas each):
  small      2 GPUs, 6 replicas, every mode, tp, share and NPS choice: the reference is the
             exhaustive search, so it always has the exact optimum.
  auto       GPUs start in SPX or CPX, the planner chooses the modes; models of 2 to 160 GiB.
  cpx        every GPU pinned to CPX (64 partitions of 24 or 32 GiB); models of 2 to 75 GiB.
  shares     as auto, and every model has a compute share (0.1 to 0.5).
  pinned-tp  as auto, and half the models have their tp pinned (tensor_parallel_size 2, 4 or 8).
  nps        as auto, with node.allow_driver_reload: the planner also chooses NPS1 or NPS4.
  replan     an auto case converged to its own plan, then one model's options change and a
             priority-0 newcomer arrives: this re-plan is the timed plan, checked against the
             reference. Every other family also re-plans after its timed plan (the same
             perturbation of its own converged plan) for the disruption columns.
Columns:
  =ref       cases where the planner's placed priority (sum of priority+1 over placed replicas)
             equals the proven optimum of benchmarks/reference_colgen.py, written without the
             planner's problem builder, solvers, packing or decode: brute force on "small";
             else a checked plan that reaches the knapsack bound, else column generation with
             branch and price over layouts and instance counts (--ref-time seconds per case),
             told the planner's value so it has to prove nothing better or find better.
  <found     cases where the reference found (and independently checked) a plan with more
             placed priority than the planner's, proven optimal or not.
  plan/ref   the planner's placed priority over the optimum, summed over proven cases.
  FFD/ref    first-fit decreasing over the current partitions (tp=1, largest first), same.
  unproven   cases whose optimum the reference could not prove in its time (the notes give
             its best value and bound: the optimum lies between them).
  invalid    plans (the timed one and the re-plan) the independent check rejects (must be 0).
  stacked    plans with an empty GPU while another GPU holds two or more instances.
  top>=fair  plans where the highest-priority instance gets at least its fair CU share
             (gpu_sharing/planner/spread.py: the node's CUs in proportion to priority x bytes,
             each capped at what it can get at best on its partitions: their CUs, or its
             compute share of them).
  disrupted  in the re-plan, running instances of unchanged models the plan stops or moves:
             priority evictions by strictly higher-priority replicas are allowed.
  unjust.    of those, instances for which the plan starts nothing of strictly higher priority
             (checked here, not by the planner): planner.preempt says this must be 0.
  p50/p95    planner wall time of the timed plan, ms, one OR-Tools worker, on this machine.
  step p50   of that, the pattern step's own time (planner.pattern_master.improve), ms, p50
             over the cases where it ran (0 when it ran in none).
Options: --budget sets every case's PlannerPolicy.time_budget_s (below 1 s the pattern step
does not run); --polish-moves N caps the ruin-and-recreate moves (planner.improve.MAX_MOVES,
0: off); --per-case prints each case's placed priority, the optimum where computed, the plan's
time, the pattern step's and ruin and recreate's own times, and the same for its re-plan.
  ref s      median seconds the reference took per case.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_speed import line as machine_line, machine_speed  # noqa: E402
from reference_colgen import reference_optimum  # noqa: E402
from reference_optimum import check_plan, placed_priority  # noqa: E402

from gpu_sharing.hardware.catalog import get_spec  # noqa: E402
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition, PhysicalGpu  # noqa: E402
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M  # noqa: E402
import gpu_sharing.planner.improve as improve_module  # noqa: E402
import gpu_sharing.planner.full_search as search_module  # noqa: E402
from gpu_sharing.planner import plan  # noqa: E402
from gpu_sharing.planner.spread import cu_ceiling, fair_cus  # noqa: E402
from gpu_sharing.planner.types import GpuPolicy, ModelDemand, PlannerPolicy, RunningInstance  # noqa: E402

GIB = 1024**3
AUTO_SIZES_GB = [2, 6, 14, 16, 30, 60, 75, 140, 160]
CPX_SIZES_GB = [2, 6, 10, 14, 16, 20, 30, 45, 60, 75]
FAMILIES = ("small", "auto", "cpx", "shares", "pinned-tp", "nps", "replan")


def gpu(index: int, model: str, compute: str, memory: str = "NPS1") -> PhysicalGpu:
    spec = get_spec(model)
    c = C(compute)
    parts = tuple(LogicalPartition(index, k, index * 8 + k, f"renderD{128 + index * 8 + k}", spec.cus_per_partition(c),
                                   spec.xccs_per_partition(c), spec.vram_per_partition_bytes(c), 0)
                  for k in range(spec.partitions(c)))
    return PhysicalGpu(index, f"0000:{index:02x}:00.0", spec.name, 1, 0, c, M(memory), parts)


def demand(name: str, gb_tp1: float, replicas: int, priority: int, tps=(1, 2, 4, 8), share=None,
           fingerprint: str = "f1") -> ModelDemand:
    """Bytes per rank: weights split over tp ranks plus 1.5 GiB of KV cache and runtime per rank."""
    return ModelDemand(name, replicas, priority, {tp: int(gb_tp1 * GIB / tp + 1.5 * GIB) for tp in tps},
                       fingerprint, compute_share=share)


def _demands(rng: random.Random, sizes: list[int], family: str) -> list[ModelDemand]:
    out, left, i = [], 64, 0
    while left > 0:
        reps = min(left, rng.randint(1, 8))
        share = rng.choice([0.1, 0.2, 0.25, 0.5]) if family == "shares" else None
        tps = (1, 2, 4, 8)
        if family == "pinned-tp" and i % 2 == 0:
            tps = (rng.choice([2, 4, 8]),)
        out.append(demand(f"m{i}", rng.choice(sizes), reps, rng.randint(0, 9), tps, share))
        left -= reps
        i += 1
    return out


def make_case(rng: random.Random, family: str):
    if family == "small":
        inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), rng.choice(["SPX", "CPX"])) for i in range(2)))
        out = [demand(f"m{i}", rng.choice(AUTO_SIZES_GB + [230]), 2, rng.randint(0, 9),
                      rng.choice([(1, 2, 4, 8), (1, 2), (4,)]), rng.choice([None, None, 0.5])) for i in range(3)]
        return inv, out, PlannerPolicy(allow_driver_reload=rng.random() < 0.5)
    kinds = [rng.choice(["MI300X", "MI300X", "MI325X"]) for _ in range(8)]
    if family == "cpx":
        inv = Inventory(tuple(gpu(i, k, "CPX") for i, k in enumerate(kinds)))
        policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus))
        return inv, _demands(rng, CPX_SIZES_GB, family), policy
    inv = Inventory(tuple(gpu(i, k, rng.choice(["SPX", "SPX", "CPX"])) for i, k in enumerate(kinds)))
    policy = PlannerPolicy(allow_driver_reload=family == "nps")
    return inv, _demands(rng, AUTO_SIZES_GB, family), policy


def ffd(inv: Inventory, demands, policy: PlannerPolicy) -> int:
    free = [p.vram_total_bytes * (1 - policy.headroom_fraction) for g in inv.gpus for p in g.partitions]
    items = sorted(((d.bytes_per_rank_by_tp[1], d.priority + 1) for d in demands for _ in range(d.replicas)
                    if 1 in d.bytes_per_rank_by_tp), reverse=True)
    placed = 0
    for size, weight in items:
        for k, f in enumerate(free):
            if size <= f:
                free[k] -= size
                placed += weight
                break
    return placed


def compute_view(inv: Inventory, p, demands) -> tuple[bool, bool]:
    """(an empty GPU while another holds 2+ instances, the top-priority instance gets its fair share)."""
    tenants: dict[int, int] = {}
    for x in p.placements:
        for g in {r.gpu for r in x.partitions}:
            tenants[g] = tenants.get(g, 0) + 1
    stacked = len(tenants) < len(inv.gpus) and any(n > 1 for n in tenants.values())
    if not p.placements:
        return stacked, True

    prio = {d.name: d.priority for d in demands}
    modes = {t.gpu: t.compute_mode for t in p.gpus}
    part_cus = {r: get_spec(inv.gpu(r.gpu).model).cus_per_partition(modes[r.gpu]) for x in p.placements
                for r in x.partitions}
    fair = fair_cus({x.instance_id: ((prio[x.model] + 1) * x.tp * x.memory_bytes_per_rank,
                                     frozenset(r.gpu for r in x.partitions),
                                     cu_ceiling(x.compute_share, [part_cus[r] for r in x.partitions]))
                     for x in p.placements}, {g.index: get_spec(g.model).cu_count for g in inv.gpus})
    top = max(p.placements, key=lambda x: (prio[x.model], x.instance_id))
    return stacked, top.compute_units >= fair[top.instance_id] - 1


def converged_replan(rng: random.Random, inv: Inventory, demands, first):
    fp = {d.name: d.fingerprint for d in demands}
    running = [RunningInstance(x.instance_id, x.model, x.replica, fp[x.model], x.partitions, x.memory_bytes_per_rank)
               for x in first.placements]
    conv = Inventory(tuple(gpu(t.gpu, inv.gpu(t.gpu).model, t.compute_mode.value, t.memory_mode.value)
                           for t in first.gpus))
    changed = list(demands)
    k = rng.randrange(len(changed))
    d = changed[k]  # its options change (1 GiB less of weights, same tps and share): a restart
    changed[k] = replace(d, bytes_per_rank_by_tp={tp: b - GIB // tp for tp, b in d.bytes_per_rank_by_tp.items()},
                         fingerprint="f2")
    changed.append(demand("newcomer", rng.choice([4, 16]), 1, 0))
    unchanged = {r.instance_id for r in running if r.model != d.name}
    return conv, changed, running, unchanged


def unjustified(p, demands, current, unchanged: set[str]) -> int:
    """Stopped or moved instances of unchanged models for which the plan starts no instance of
    strictly higher priority that did not run before (so no higher-priority gain can explain it)."""
    prio = {d.name: d.priority for d in demands}
    ran = {r.instance_id for r in current}
    started = [prio[x.model] for x in p.to_start if x.instance_id not in ran or x.model not in
               {d.name for d in demands if d.fingerprint == "f1"}]
    top = max(started, default=-1)
    return sum(1 for iid in p.to_stop if iid in unchanged and prio[iid.rsplit("-", 1)[0]] >= top)


def _timed(name: str, times: list[float]) -> None:
    """Replace full_search's ``name`` by a wrapper that appends its own time to ``times``."""
    step = getattr(search_module, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - t0)

    setattr(search_module, name, timed)


STEP_TIMES: list[float] = []
"""The pattern step's own times (planner.pattern_master.improve) in one plan."""
POLISH_TIMES: list[float] = []
"""Ruin and recreate's own times (planner.improve.improve) in one plan."""
_timed("improve", STEP_TIMES)
_timed("ruin_and_recreate", POLISH_TIMES)


def run_case(rng, family, ref_time, budget_s=None):
    base = "auto" if family == "replan" else family
    inv, demands, policy = make_case(rng, base)
    if budget_s is not None:
        policy = replace(policy, time_budget_s=budget_s)
    current, unchanged = [], set()
    if family == "replan":
        first = plan(inv, demands, [], policy)
        inv, demands, current, unchanged = converged_replan(rng, inv, demands, first)
    STEP_TIMES.clear()
    POLISH_TIMES.clear()
    t0 = time.perf_counter()
    p = plan(inv, demands, current, policy)
    took = time.perf_counter() - t0
    step = sum(STEP_TIMES) if STEP_TIMES else None
    polish = sum(POLISH_TIMES) if POLISH_TIMES else None
    ref = reference_optimum(inv, demands, policy, p, ref_time) if ref_time > 0 else None
    stacked, fair = compute_view(inv, p, demands)
    row = {"planner": placed_priority(p, demands), "ref": ref, "ffd": ffd(inv, demands, policy),
           "invalid": bool(check_plan(inv, demands, policy, p)), "stacked": stacked, "fair": fair,
           "time": took, "gap": p.solver.gap, "step": step, "polish": polish}
    if family != "replan":  # every family re-plans too: converge to its own plan, then perturb
        inv, demands, current, unchanged = converged_replan(rng, inv, demands, p)
        POLISH_TIMES.clear()
        t0 = time.perf_counter()
        p = plan(inv, demands, current, policy)
        row["replan_time"] = time.perf_counter() - t0
        row["replan_planner"] = placed_priority(p, demands)
        row["replan_polish"] = sum(POLISH_TIMES) if POLISH_TIMES else None
        row["replan_invalid"] = bool(check_plan(inv, demands, policy, p))
    row["disrupted"] = sum(1 for iid in p.to_stop if iid in unchanged)
    row["unjustified"] = unjustified(p, demands, current, unchanged)
    return row


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _case_line(family: str, n: int, r: dict) -> str:
    """--per-case: placed priority and times of the timed plan and of its re-plan."""
    ref = r["ref"]
    optimum = "-" if ref is None else (ref.optimum if ref.optimum is not None else f"{ref.found}..{ref.bound}")
    line = (f"{family} case {n}: placed {r['planner']} (optimum {optimum}) in {_ms(r['time'])} ms, "
            f"pattern step {_ms(r['step'])} ms, ruin and recreate {_ms(r['polish'])} ms")
    if "replan_planner" in r:
        line += (f"; re-plan placed {r['replan_planner']} in {_ms(r['replan_time'])} ms, "
                 f"ruin and recreate {_ms(r['replan_polish'])} ms")
    return line


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=20, help="cases per family")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ref-time", type=float, default=40.0,
                    help="seconds for the reference per case (0: timing only)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--polish-moves", type=int, default=None,
                    help="ruin-and-recreate moves at most (planner.improve.MAX_MOVES; 0: step off)")
    ap.add_argument("--budget", type=float, default=None, help="PlannerPolicy.time_budget_s of every case")
    ap.add_argument("--per-case", action="store_true", help="also print one line per case")
    ap.add_argument("--no-machine-speed", action="store_true",
                    help="skip the machine's speed line (benchmarks/machine_speed.py, about 5 s)")
    args = ap.parse_args()
    if not args.no_machine_speed:  # times compare across machines only through these (machine_speed.py)
        print(machine_line(machine_speed(make_case, 3)), flush=True)
    if args.polish_moves is not None:
        improve_module.MAX_MOVES = args.polish_moves
    print(f"{'family':<10} {'cases':>5} {'=ref':>5} {'<found':>6} {'plan/ref':>8} {'FFD/ref':>8} {'unproven':>8} "
          f"{'invalid':>7} {'stacked':>7} {'top>=fair':>9} {'disrupted':>9} {'unjust.':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'max ms':>7} {'ref s':>6} {'step p50':>8}")
    notes = []
    for family in args.families.split(","):
        rng = random.Random(f"{args.seed}-{family}")
        rows = []
        for _ in range(args.cases):
            t0 = time.perf_counter()
            rows.append(run_case(rng, family, args.ref_time, args.budget))
            rows[-1]["ref_time"] = time.perf_counter() - t0 - rows[-1]["time"]
        refs = [r["ref"] for r in rows]
        proven = [r for r in rows if r["ref"] is not None and r["ref"].optimum is not None]
        total = sum(r["ref"].optimum for r in proven) or 1
        times = [r["time"] for r in rows]
        print(f"{family:<10} {len(rows):>5} {sum(r['planner'] == r['ref'].optimum for r in proven):>5} "
              f"{sum(1 for r in rows if r['ref'] is not None and r['ref'].found > r['planner']):>6} "
              f"{sum(r['planner'] for r in proven) / total:>8.3f} {sum(r['ffd'] for r in proven) / total:>8.3f} "
              f"{len(rows) - len(proven):>8} {sum(r['invalid'] + r.get('replan_invalid', 0) for r in rows):>7} "
              f"{sum(r['stacked'] for r in rows):>7} {sum(r['fair'] for r in rows):>9} "
              f"{sum(r['disrupted'] for r in rows):>9} {sum(r['unjustified'] for r in rows):>7} "
              f"{pct(times, 0.5) * 1000:>7.1f} {pct(times, 0.95) * 1000:>7.1f} {max(times) * 1000:>7.1f} "
              f"{pct([r['ref_time'] for r in rows], 0.5):>6.1f} "
              f"{pct([r['step'] for r in rows if r['step'] is not None], 0.5) * 1000:>8.1f}", flush=True)
        if args.per_case:
            notes += [_case_line(family, n, r) for n, r in enumerate(rows)]
        for n, (r, ref) in enumerate(zip(rows, refs)):
            if ref is None or ref.optimum is None or r["planner"] != ref.optimum:
                optimum = "unproven" if ref is None or ref.optimum is None else ref.optimum
                notes.append(f"{family} case {n}: planner {r['planner']} (claims gap {r['gap']:.3f}) in "
                             f"{r['time'] * 1000:.0f} ms (step {(r['step'] or 0.0) * 1000:.0f} ms), reference "
                             f"found {ref.found if ref else '-'}, bound {ref.bound if ref else '-'}, optimum {optimum}: "
                             f"{ref.how if ref else 'not computed'}")
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
