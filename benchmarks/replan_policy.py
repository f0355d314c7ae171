"""Why a re-plan places less than the optimum: the preemption policy, or the search around what runs.

    python benchmarks/replan_policy.py [--seeds 1] [--cases 20] [--json]

For each re-plan of benchmarks/planner.py's ``replan`` family (plan_digest.every_plan: the same
random streams and inputs) it plans the same demands three ways: as the benchmark does
(``planner.preempt: strictly_higher_priority``, the default), with ``preempt: any_gain`` (any
running instance may be stopped or moved for any gain), and fresh (nothing running). It prints
the placed priority of each, one line per case where they differ.

Why: the benchmark's reference ignores the preemption policy, so a re-plan short of its optimum
is either held back by the policy on purpose (``any_gain`` places more) or by the re-plan's
search around the running instances (a fresh plan places more, ``any_gain`` does not).
docs/planner-benchmark.md, session 10, has seed 1's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import plan_digest  # noqa: E402
from reference_optimum import placed_priority  # noqa: E402

from gpu_sharing.planner import plan  # noqa: E402
from gpu_sharing.planner.types import PreemptPolicy  # noqa: E402


def compare(seeds: list[int], cases: int):
    """(seed, case, strict, any_gain, fresh) placed priority for every re-plan of those seeds."""
    inputs = []

    def recording(inv, demands, current, policy):
        inputs.append((inv, demands, current, policy))
        return plan(inv, demands, current, policy)

    original = plan_digest.plan
    plan_digest.plan = recording  # every_plan plans through plan_digest.plan: keep each input
    try:
        for _family, seed, case, label, p, demands, _s in plan_digest.every_plan(["replan"], seeds, cases):
            if label != "timed":
                continue
            inv, demands, current, policy = inputs[-1]
            anyway = plan(inv, demands, current, replace(policy, preempt=PreemptPolicy.ANY_GAIN))
            fresh = plan(inv, demands, [], policy)
            yield (seed, case, placed_priority(p, demands), placed_priority(anyway, demands),
                   placed_priority(fresh, demands))
    finally:
        plan_digest.plan = original


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="every case, as a JSON list")
    args = ap.parse_args(argv)
    rows = list(compare([int(s) for s in args.seeds.split(",")], args.cases))
    if args.json:
        print(json.dumps([dict(zip(("seed", "case", "strict", "any_gain", "fresh"), r)) for r in rows]))
        return 0
    print(f"{'seed':>4} {'case':>4} {'strict':>7} {'any_gain':>8} {'fresh':>6}")
    for seed, case, strict, anyway, fresh in rows:
        if len({strict, anyway, fresh}) > 1:
            print(f"{seed:>4} {case:>4} {strict:>7} {anyway:>8} {fresh:>6}")
    held = sum(1 for r in rows if r[3] > r[2])
    searched = sum(1 for r in rows if r[4] > r[3])
    print(f"{len(rows)} re-plans: any_gain places more in {held} (the policy holds them back), "
          f"a fresh plan places more than any_gain in {searched} (the search around what runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
