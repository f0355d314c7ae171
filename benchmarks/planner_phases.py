"""Where plan()'s time goes, per family: the wall time of each step of the full-set search.

    python benchmarks/planner_phases.py [--seeds 1,2,3] [--cases 5] [--families auto,cpx,shares,pinned-tp] [--json]

For the fresh (timed) plans of benchmarks/planner.py's cases (plan_digest.every_plan, same
random streams) it times, around the functions the pipeline calls: the surrogate knapsack
(``knapsack``), the layout search (``layout``), the pattern step's column generation
(``colgen``: GLOP and the pricing) and its MIP (``mip``: CP-SAT over the columns), ruin and
recreate after them (``r&r``), and the whole plan() (``total``; the rest is problem building,
the final fill, the compute spread and the plan's assembly). Prints median / mean ms per
family and step; ``--json`` prints every plan's numbers instead.

Why: the issue's speed targets are per family, and which step to make faster differs by
family (docs/planner-benchmark.md, session 7: CP-SAT is most of shares and pinned tp, the
layout search a tenth). Timings are wall clock on a shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_digest import every_plan  # noqa: E402

import gpu_sharing.planner.full_search as full_search  # noqa: E402
import gpu_sharing.planner.pattern_master as pattern_master  # noqa: E402

STEPS = (("knapsack", full_search, "surrogate"), ("layout", full_search, "search_layouts"),
         ("colgen", pattern_master, "generate"), ("mip", pattern_master, "solve_integer"),
         ("r&r", full_search, "ruin_and_recreate"))


@contextlib.contextmanager
def timed_steps():
    """Each step's function wrapped where the pipeline looks it up, for the ``with`` block; yields
    the dict the wrappers add their seconds to (the caller clears it per plan)."""
    spent: dict[str, float] = {}
    originals = [(module, attr, getattr(module, attr)) for _name, module, attr in STEPS]
    for (name, _module, _attr), (module, attr, fn) in zip(STEPS, originals):
        def wrapper(*args, _fn=fn, _name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0
        setattr(module, attr, wrapper)
    try:
        yield spent
    finally:
        for module, attr, fn in originals:
            setattr(module, attr, fn)


def measure(seeds: list[int], cases: int, families: list[str]) -> dict[str, dict[str, float]]:
    """{"family/seed/case": {step: ms, "total": ms}} for each fresh plan."""
    out = {}
    with timed_steps() as spent:
        for family, seed, case, label, _p, _demands, seconds in every_plan(families, seeds, cases):
            if label == "timed":
                row = {name: round(spent.get(name, 0.0) * 1000, 2) for name, _m, _a in STEPS}
                row["total"] = round(seconds * 1000, 2)
                out[f"{family}/{seed}/{case}"] = row
            spent.clear()  # the next plan is made when the loop asks for it: it starts from nothing
    return out


def table(rows: dict[str, dict[str, float]], families: list[str]) -> list[str]:
    names = ["total"] + [name for name, _m, _a in STEPS]
    lines = [f"{'family':<10} " + " ".join(f"{n + ' p50/mean':>18}" for n in names)]
    for family in families:
        mine = [r for k, r in rows.items() if k.split("/")[0] == family]
        cells = [f"{statistics.median(r[n] for r in mine):.1f} / {statistics.fmean(r[n] for r in mine):.1f}"
                 for n in names]
        lines.append(f"{family:<10} " + " ".join(f"{c:>18}" for c in cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--families", default="auto,cpx,shares,pinned-tp")
    ap.add_argument("--json", action="store_true", help="every plan's step times, ms")
    args = ap.parse_args(argv)
    families = args.families.split(",")
    rows = measure([int(s) for s in args.seeds.split(",")], args.cases, families)
    print(json.dumps(rows, indent=1) if args.json else "\n".join(table(rows, families)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
