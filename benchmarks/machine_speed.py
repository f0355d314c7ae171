"""How fast this machine is at the planner's two kinds of work, so that times from different machines compare.

    python benchmarks/machine_speed.py [--repeats 5] [--json]

Why: the issue's speed targets are "on this 2-core machine", but the development machines
differ from session to session by a factor of 2-4 (docs/planner-benchmark.md: the same code at
p50 60 ms on one machine, 200 ms on another). plan()'s result never depends on the machine
(every limit is counted work), its wall time does, and in two ways that do not scale alike:

- ``python ms``: plan() of one fixed case with a 0.5 s budget (below the pattern step's
  MIN_BUDGET_S, so no CP-SAT runs): the layout search, the greedy fills and ruin and recreate,
  which are pure Python and numpy (one core);
- ``cpsat ms``: wall time of one CP-SAT worker for CPSAT_DETERMINISTIC_S of deterministic time
  on one fixed model that it does not finish (pattern_mip's searches run on the same kind of
  clock: pattern_master.MIP_DETERMINISTIC_S).

benchmarks/planner.py prints both before its table; divide a family's times by them to compare
runs made on different machines. Median of ``--repeats`` runs each, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ortools.sat.python import cp_model  # noqa: E402

from gpu_sharing.planner.pattern_master import MIP_DETERMINISTIC_S  # noqa: E402
from gpu_sharing.planner.planner import plan  # noqa: E402

CPSAT_DETERMINISTIC_S = MIP_DETERMINISTIC_S
"""The planner's own CP-SAT searches' deterministic time (pattern_master)."""


def python_case(make_case):
    """The fixed case: benchmarks/planner.py's first cpx case (``make_case``) of stream
    "machine-speed", with a 0.5 s budget."""
    inv, demands, policy = make_case(random.Random("machine-speed"), "cpx")
    return inv, demands, replace(policy, time_budget_s=0.5)


def python_ms(repeats: int, make_case) -> float:
    inv, demands, policy = python_case(make_case)
    plan(inv, demands, [], policy)  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan(inv, demands, [], policy)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def cpsat_model() -> cp_model.CpModel:
    """A fixed multiple knapsack (80 items, 8 bins) that one worker does not solve to
    optimality within CPSAT_DETERMINISTIC_S: the whole limit is spent every time."""
    rng = random.Random("machine-speed")
    m = cp_model.CpModel()
    items = [(rng.randint(5, 60), rng.randint(1, 40)) for _ in range(80)]  # (size, value)
    bins = [rng.randint(120, 200) for _ in range(8)]
    x = {(i, b): m.NewBoolVar("") for i in range(len(items)) for b in range(len(bins))}
    for i in range(len(items)):
        m.AddAtMostOne(x[i, b] for b in range(len(bins)))
    for b, cap in enumerate(bins):
        m.Add(sum(items[i][0] * x[i, b] for i in range(len(items))) <= cap)
    m.Maximize(sum(items[i][1] * x[i, b] for (i, b) in x))
    return m


def cpsat_ms(repeats: int) -> float:
    model = cpsat_model()
    times = []
    for k in range(repeats + 1):
        s = cp_model.CpSolver()
        s.parameters.num_workers = 1
        s.parameters.max_deterministic_time = CPSAT_DETERMINISTIC_S
        s.parameters.max_time_in_seconds = 60.0  # a guard only
        t0 = time.perf_counter()
        status = s.Solve(model)
        if status == cp_model.OPTIMAL:
            raise RuntimeError("machine_speed: the CP-SAT model was solved to optimality; it must use its whole limit")
        if k:  # the first run is a warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def machine_speed(make_case, repeats: int = 5) -> dict[str, float]:
    """Both figures; ``make_case``: benchmarks/planner.py's (passed in: that script imports this one)."""
    return {"python_ms": python_ms(repeats, make_case), "cpsat_ms": cpsat_ms(repeats)}


def line(speed: dict[str, float]) -> str:
    return (f"machine: python {speed['python_ms']:.1f} ms (plan() of the fixed case, 0.5 s budget), "
            f"cpsat {speed['cpsat_ms']:.1f} ms ({CPSAT_DETERMINISTIC_S} s deterministic, one worker)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from planner import make_case  # benchmarks/planner.py

    speed = machine_speed(make_case, max(1, args.repeats))
    print(json.dumps(speed) if args.json else line(speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
