"""Planner quality and speed on seeded random fleets.

    python benchmarks/planner.py [--cases 200] [--seed 1]

Each case: 1 to 8 GPUs (MI300X / MI325X mix, SPX at start, some CPX), 1 to 64 replicas of
models from 2 to 160 GiB per replica with priorities 0-9; a third of the cases start from the
planner's own earlier plan with ~10% of demands changed (disruption test).
Columns: placed priority of the planner vs first-fit decreasing (FFD: current modes, tp=1,
largest first) vs an upper bound (a CP-SAT knapsack relaxation: total node capacity, each item
no larger than the largest partition; when the planner reaches it, the plan is proven optimal),
disruption (running instances stopped or moved), and planner time p50/p95.
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

from builders import GIB, demand, gpu  # noqa: E402
from ortools.sat.python import cp_model  # noqa: E402

from gpu_sharing.hardware.catalog import get_spec  # noqa: E402
from gpu_sharing.hardware.inventory import Inventory  # noqa: E402
from gpu_sharing.planner import plan  # noqa: E402
from gpu_sharing.planner.types import PlannerPolicy, RunningInstance  # noqa: E402

POLICY = PlannerPolicy()


def random_case(rng: random.Random):
    n = rng.randint(1, 8)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI300X", "MI325X"]), rng.choice(["SPX", "SPX", "CPX"]))
                          for i in range(n)))
    demands, total = [], rng.randint(1, 64)
    i = 0
    while total > 0:
        reps = min(total, rng.randint(1, 8))
        demands.append(demand(f"m{i}", rng.choice([2, 6, 14, 16, 30, 60, 75, 140, 160]), reps, rng.randint(0, 9)))
        total -= reps
        i += 1
    return inv, demands


def ffd(inv: Inventory, demands) -> int:
    free = [p.vram_total_bytes * (1 - POLICY.headroom_fraction) for g in inv.gpus for p in g.partitions]
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


def upper_bound(inv: Inventory, demands) -> int:
    cap = 0
    largest = 0
    for g in inv.gpus:
        spec = get_spec(g.model)
        cap += int(spec.vram_bytes * (1 - POLICY.headroom_fraction))
        largest = max(largest, int(spec.vram_bytes * (1 - POLICY.headroom_fraction)))
    m = cp_model.CpModel()
    xs, terms, weights = [], [], []
    for d in demands:
        best_total = min(tp * b for tp, b in d.bytes_per_rank_by_tp.items())
        if min(d.bytes_per_rank_by_tp.values()) > largest:
            continue
        for _ in range(d.replicas):
            x = m.NewBoolVar("")
            xs.append(x)
            terms.append(best_total // 2**20 * x)
            weights.append((d.priority + 1) * x)
    if not xs:
        return 0
    m.Add(sum(terms) <= cap // 2**20)
    m.Maximize(sum(weights))
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = 5
    s.parameters.num_workers = 2
    s.Solve(m)
    return int(s.BestObjectiveBound())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    times, rows = [], []
    for c in range(args.cases):
        inv, demands = random_case(rng)
        t0 = time.perf_counter()
        p = plan(inv, demands, [], POLICY)
        times.append(time.perf_counter() - t0)
        got = int(p.solver.objective)
        disruption = 0
        if c % 3 == 0 and p.placements:
            fp = {d.name: d.fingerprint for d in demands}
            running = [RunningInstance(x.instance_id, x.model, x.replica, fp[x.model], x.partitions, x.memory_bytes_per_rank)
                       for x in p.placements]
            conv = Inventory(tuple(gpu(t.gpu, inv.gpu(t.gpu).model, t.compute_mode.value, t.memory_mode.value) for t in p.gpus))
            changed = demands + [demand("new", rng.choice([4, 16]), 1, 0)]
            t0 = time.perf_counter()
            again = plan(conv, changed, running, POLICY)
            times.append(time.perf_counter() - t0)
            disruption = len(again.to_stop)
        rows.append((len(inv.gpus), sum(d.replicas for d in demands), got, ffd(inv, demands), upper_bound(inv, demands),
                     disruption))
    proven = sum(1 for r in rows if r[2] >= r[4])
    not_worse = sum(1 for r in rows if r[2] >= r[3])
    print(f"{'cases':>6} {'GPUs':>5} {'replicas':>9} {'planner/bound':>14} {'FFD/bound':>10} {'proven opt':>11} "
          f"{'>= FFD':>7} {'disruption (re-plan +1 model)':>31}")
    for n in range(1, 9):
        sub = [r for r in rows if r[0] == n]
        if not sub:
            continue
        pr = sum(r[2] for r in sub) / max(1, sum(r[4] for r in sub))
        fr = sum(r[3] for r in sub) / max(1, sum(r[4] for r in sub))
        print(f"{len(sub):>6} {n:>5} {statistics.mean(r[1] for r in sub):>9.1f} {pr:>14.3f} {fr:>10.3f} "
              f"{sum(1 for r in sub if r[2] >= r[4]):>11} {sum(1 for r in sub if r[2] >= r[3]):>7} "
              f"{sum(r[5] for r in sub):>31}")
    times.sort()
    p50, p95 = times[len(times) // 2], times[int(len(times) * 0.95)]
    print(f"\nall: {len(rows)} cases; planner reached the upper bound (proven optimal) in {proven}; "
          f"never worse than FFD in {not_worse}/{len(rows)}; time p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
          f"max {times[-1] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
