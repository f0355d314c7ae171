"""A digest of every plan the planner benchmark makes, to show a speed change left every plan as it was.

    python benchmarks/plan_digest.py [--seeds 1,2,3] [--cases 5] [--families small,auto,...] [--budget S] [--full]

For each family and seed it builds the same cases as benchmarks/planner.py (same random
streams) and runs the same plans as its run_case: the timed plan and the re-plan after it
(for "replan": the converged first plan, then the re-plan). Per plan it prints one line:
family, seed, case, which plan, then a SHA-256 over placed priority, the GPUs' target modes,
the placements sorted (instance, partitions, tp, bytes per rank, CUs), what stops, the
unplaceable replicas with their reasons and the solver's name, objective, bound and status;
``--full`` prints that text itself instead of its hash. The last line hashes all lines. Run it
before and after a change and compare the outputs byte for byte (no timing is printed); the
last line is the same with or without ``--full``. ``--budget`` sets every case's
PlannerPolicy.time_budget_s, as benchmarks/planner.py's option does (below 1 s the pattern
step does not run, so the steps after it show).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import FAMILIES, converged_replan, make_case  # noqa: E402
from reference_optimum import placed_priority  # noqa: E402

from gpu_sharing.planner import plan  # noqa: E402


def describe(p, demands) -> str:
    """Everything a plan decides, in a fixed order (no wall times)."""
    parts = [f"placed={placed_priority(p, demands)}"]
    parts.append("modes=" + ",".join(f"{t.gpu}:{t.compute_mode.value}/{t.memory_mode.value}"
                                     for t in sorted(p.gpus, key=lambda t: t.gpu)))
    for x in sorted(p.placements, key=lambda x: x.instance_id):
        refs = "+".join(f"{r.gpu}.{r.index}" for r in x.partitions)
        parts.append(f"{x.instance_id}@{refs} tp={x.tp} b={x.memory_bytes_per_rank} cu={x.compute_units}")
    parts.append("stop=" + ",".join(sorted(p.to_stop)))
    for u in sorted(p.unplaceable, key=lambda u: (u.model, u.replica)):
        parts.append(f"unplaced {u.model}-{u.replica}: {u.reason}")
    s = p.solver
    parts.append(f"solver={s.name} obj={s.objective} bound={s.bound} status={s.status}")
    return "\n".join(parts)


def plans_of_case(rng: random.Random, family: str, budget_s: float | None = None):
    """(label, plan, demands, seconds) for every plan benchmarks/planner.py's run_case makes, in
    order; ``seconds``: that plan() call's wall time (planner_knobs.py reports it; the digest
    does not)."""
    base = "auto" if family == "replan" else family
    inv, demands, policy = make_case(rng, base)
    if budget_s is not None:
        policy = replace(policy, time_budget_s=budget_s)
    current = []
    if family == "replan":
        first, took = _timed_plan(inv, demands, current, policy)
        yield "converge", first, demands, took
        inv, demands, current, _unchanged = converged_replan(rng, inv, demands, first)
    p, took = _timed_plan(inv, demands, current, policy)
    yield "timed", p, demands, took
    if family != "replan":
        inv, demands, current, _unchanged = converged_replan(rng, inv, demands, p)
        again, took = _timed_plan(inv, demands, current, policy)
        yield "replan", again, demands, took


def every_plan(families: list[str], seeds: list[int], cases: int, budget_s: float | None = None):
    """(family, seed, case, label, plan, demands, seconds) for every plan of those families,
    seeds and cases, in the benchmark's order (plans_of_case; each family and seed its own
    random stream, as benchmarks/planner.py draws it)."""
    for family in families:
        for seed in seeds:
            rng = random.Random(f"{seed}-{family}")
            for case in range(cases):
                for label, p, demands, seconds in plans_of_case(rng, family, budget_s):
                    yield family, seed, case, label, p, demands, seconds


def _timed_plan(inv, demands, current, policy):
    t0 = time.perf_counter()
    p = plan(inv, demands, current, policy)
    return p, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--budget", type=float, default=None, help="PlannerPolicy.time_budget_s of every case")
    ap.add_argument("--full", action="store_true", help="print each plan's text instead of its hash")
    args = ap.parse_args()
    everything = hashlib.sha256()
    seeds = [int(s) for s in args.seeds.split(",")]
    for family, seed, case, label, p, demands, _s in every_plan(args.families.split(","), seeds, args.cases,
                                                                args.budget):
        text = describe(p, demands)
        body = text if args.full else hashlib.sha256(text.encode()).hexdigest()
        everything.update(f"{family} {seed} {case} {label}\n{text}\n".encode())
        print(f"{family} seed={seed} case={case} {label} {body}", flush=True)
    print(f"all {everything.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
