"""Planner quality and speed on seeded random fleets, against first-fit decreasing and the proven optimum.

    python benchmarks/planner.py [--cases 120] [--seed 1] [--full-node 20]

Case families (seeded):
  auto     1 to 8 GPUs (MI300X / MI325X mix, starting in SPX or CPX), 1 to 64 replicas of
           models of 2 to 160 GiB, priorities 0-9; the planner chooses the compute modes.
  cpx      8 GPUs pinned to CPX (64 partitions of 24 or 32 GiB), 64 replicas of 2 to 75 GiB:
           small models pack, larger ones take tp=2/4/8 across partitions of one GPU.
  replan   an auto case converged to its own plan, then one model's options change and a
           new model arrives: counts instances of unchanged models that were stopped or moved.
Columns:
  planner/opt   placed priority (sum of priority+1 over placed replicas) of the planner over
                the proven optimum. The optimum comes from a different model and solver than
                the planner's main path: the configuration model (gpu_sharing/planner/mip.py)
                run by SCIP on the unrestricted problem (every layout of every GPU, no
                dominance step), 60 s per case. A case it cannot prove counts as "unproven".
  FFD/opt       first-fit decreasing over the current partitions (tp=1, largest first).
  =opt, >=FFD   cases where the planner reaches the optimum / is at least as good as FFD.
  self-proven   cases where the planner's own SolverInfo reports gap 0 (its own proof).
  disrupted     replan only: running instances of unchanged models stopped or moved. The
                placed-priority objective comes first (DESIGN.md): a move or stop happens
                for priority eviction or a repacking that places more priority.
  p50/p95 ms    planner wall time (one core, OR-Tools with one worker).
A final table times the acceptance shape: 8 GPUs and 64 replicas (auto and CPX-pinned).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "planner"))

from builders import demand, gpu  # noqa: E402

from gpu_sharing.hardware.inventory import Inventory  # noqa: E402
from gpu_sharing.hardware.modes import ComputePartitionMode as C  # noqa: E402
from gpu_sharing.planner import plan  # noqa: E402
from gpu_sharing.planner.exact import solve_placed_priority  # noqa: E402
from gpu_sharing.planner.mip import solve_by_configurations  # noqa: E402
from gpu_sharing.planner.problem import build_problem  # noqa: E402
from gpu_sharing.planner.types import GpuPolicy, PlannerPolicy, RunningInstance  # noqa: E402

POLICY = PlannerPolicy()
UNPROVEN: list[tuple] = []
"""(best found, best bound) of the reference on cases it could not prove."""
AUTO_SIZES_GB = [2, 6, 14, 16, 30, 60, 75, 140, 160]
CPX_SIZES_GB = [2, 6, 10, 14, 16, 20, 30, 45, 60, 75]


def _demands(rng: random.Random, replicas: int, sizes: list[int]):
    out, i = [], 0
    while replicas > 0:
        reps = min(replicas, rng.randint(1, 8))
        out.append(demand(f"m{i}", rng.choice(sizes), reps, rng.randint(0, 9)))
        replicas -= reps
        i += 1
    return out


def auto_case(rng: random.Random, n_gpus: int | None = None, replicas: int | None = None):
    n = n_gpus or rng.randint(1, 8)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI300X", "MI325X"]), rng.choice(["SPX", "SPX", "CPX"]))
                          for i in range(n)))
    return inv, _demands(rng, replicas or rng.randint(1, 64), AUTO_SIZES_GB), POLICY


def cpx_case(rng: random.Random):
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), "CPX") for i in range(8)))
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus))
    return inv, _demands(rng, 64, CPX_SIZES_GB), policy


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


def optimum(inv: Inventory, demands, policy: PlannerPolicy) -> tuple[int | None, float]:
    """The unrestricted problem's optimum: the configuration model (SCIP, 60 s), then, if that
    leaves a gap, the counts model (CP-SAT, 8 workers, 60 s)."""
    t0 = time.perf_counter()
    prob = build_problem(inv, demands, policy)
    res = solve_by_configurations(prob, 60.0)
    if res is None or res.status != "OPTIMAL":
        res = solve_placed_priority(prob, None, 60.0, workers=8)
    took = time.perf_counter() - t0
    if res is None or res.status != "OPTIMAL":
        UNPROVEN.append((res.objective, res.bound) if res is not None else (None, None))
        return None, took
    return res.objective, took


def timed_plan(inv, demands, current, policy):
    t0 = time.perf_counter()
    p = plan(inv, demands, current, policy)
    return p, time.perf_counter() - t0


def replan(rng: random.Random, inv: Inventory, demands, first) -> tuple[float, int]:
    """Converge to ``first``, change one model's options, add a model; count the running
    instances of unchanged models that were stopped or moved."""
    fp = {d.name: d.fingerprint for d in demands}
    running = [RunningInstance(x.instance_id, x.model, x.replica, fp[x.model], x.partitions, x.memory_bytes_per_rank)
               for x in first.placements]
    conv = Inventory(tuple(gpu(t.gpu, inv.gpu(t.gpu).model, t.compute_mode.value, t.memory_mode.value)
                           for t in first.gpus))
    changed = list(demands)
    k = rng.randrange(len(changed))
    d = changed[k]
    changed[k] = demand(d.name, (d.bytes_per_rank_by_tp[1] / 2**30) - 1.5, d.replicas, d.priority, fingerprint="f2")
    changed.append(demand("newcomer", rng.choice([4, 16]), 1, 0))
    again, took = timed_plan(conv, changed, running, POLICY)
    unchanged_models = {x.name for x in changed if x.fingerprint == "f1"}
    kept_before = {r.instance_id for r in running if r.model in unchanged_models}
    disrupted = sum(1 for iid in again.to_stop if iid in kept_before)
    return took, disrupted


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full-node", type=int, default=20, help="cases of the 8-GPU, 64-replica timing table")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows: dict[str, list[dict]] = {"auto": [], "cpx": [], "replan": []}
    for c in range(args.cases):
        family = "cpx" if c % 6 == 5 else "auto"
        inv, demands, policy = cpx_case(rng) if family == "cpx" else auto_case(rng)
        p, took = timed_plan(inv, demands, [], policy)
        opt, _ = optimum(inv, demands, policy)
        if opt is None:
            UNPROVEN[-1] = (*UNPROVEN[-1], int(p.solver.objective), p.solver.gap == 0)
        row = {"gpus": len(inv.gpus), "planner": int(p.solver.objective), "ffd": ffd(inv, demands, policy),
               "opt": opt, "self_proven": p.solver.gap == 0, "time": took, "disrupted": 0}
        rows[family].append(row)
        if family == "auto" and c % 3 == 0 and p.placements:
            t, disrupted = replan(rng, inv, demands, p)
            rows["replan"].append({**row, "time": t, "disrupted": disrupted})
    print(f"{'family':<8} {'cases':>5} {'planner/opt':>11} {'FFD/opt':>8} {'=opt':>5} {'>=FFD':>6} {'unproven':>8} "
          f"{'self-proven':>11} {'disrupted':>9} {'p50 ms':>7} {'p95 ms':>7}")
    for family, sub in rows.items():
        if not sub:
            continue
        proven = [r for r in sub if r["opt"] is not None]
        total_opt = sum(r["opt"] for r in proven) or 1
        times = sorted(r["time"] for r in sub)
        print(f"{family:<8} {len(sub):>5} {sum(r['planner'] for r in proven) / total_opt:>11.3f} "
              f"{sum(r['ffd'] for r in proven) / total_opt:>8.3f} {sum(r['planner'] == r['opt'] for r in proven):>5} "
              f"{sum(r['planner'] >= r['ffd'] for r in sub):>6} {len(sub) - len(proven):>8} "
              f"{sum(r['self_proven'] for r in sub):>11} {sum(r['disrupted'] for r in sub):>9} "
              f"{times[len(times) // 2] * 1000:>7.1f} {times[int(len(times) * 0.95)] * 1000:>7.1f}")
    for found, bound, planner_value, self_proven in (u for u in UNPROVEN if len(u) == 4):
        print(f"reference left a gap: it found {found}, bound {bound}; the planner placed {planner_value}"
              f"{' with its own proof (dominance.py)' if self_proven else ''}")
    moved = [r for r in rows["replan"] if r["disrupted"]]
    print(f"\nreplan: {len(moved)} of {len(rows['replan'])} re-plans stopped or moved running instances of unchanged "
          f"models ({sum(r['disrupted'] for r in moved)} instances), by priority eviction or a repacking that places "
          f"more priority (placed priority comes first, DESIGN.md)")
    print(f"\n8 GPUs x 64 replicas ({args.full_node} cases each):")
    print(f"{'family':<8} {'=opt':>5} {'self-proven':>11} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for family in ("auto", "cpx"):
        times, hits, selfp = [], 0, 0
        for _ in range(args.full_node):
            inv, demands, policy = cpx_case(rng) if family == "cpx" else auto_case(rng, 8, 64)
            p, took = timed_plan(inv, demands, [], policy)
            opt, _ = optimum(inv, demands, policy)
            times.append(took)
            hits += opt is not None and int(p.solver.objective) == opt
            selfp += p.solver.gap == 0
        times.sort()
        print(f"{family:<8} {hits:>5} {selfp:>11} {statistics.median(times) * 1000:>7.1f} "
              f"{times[int(len(times) * 0.95)] * 1000:>7.1f} {times[-1] * 1000:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
