"""The planner's work limits against each other: placed priority and time per setting, case by case.

    python benchmarks/planner_knobs.py [--seeds 1,2,3] [--cases 5] [--families auto,cpx,shares,pinned-tp]
                                       [--json] SETTING [SETTING ...]

A SETTING is ``default`` or ``name:module.CONSTANT=value[,module.CONSTANT=value...]``, e.g.
``det05:pattern_master.MIP_DETERMINISTIC_S=0.05`` or ``evals8:layout_search.MAX_EVALUATIONS=8``
(modules under gpu_sharing.planner; values are Python literals). A constant that a function
of its module took as a default argument (``search_layouts(max_evaluations=MAX_EVALUATIONS)``)
is rebound there too, when the parameter is the constant's name in lower case (the planner
keeps that convention: pattern_master.generate's max_pricing_cells, layout_search's
max_evaluations).

Why: the planner's result depends on counted work limits (CP-SAT's deterministic time, pricing
cells and rounds, layouts packed, ruin-and-recreate moves), and a limit that looks better on
the benchmark's seed often loses on other seeds (docs/planner-benchmark.md, session 7: CP-SAT's
time raised where the window to the bound is small gained +5 on seeds 1-3 and lost 6 on seeds
4-6). This runs every setting on the same cases as benchmarks/planner.py and its re-plans
(plan_digest.every_plan: same random streams), one setting after the other in a child
process each (a fresh import, so no setting leaks into the next), and prints per family and
setting: placed priority summed over the timed plans and over the re-plans, the cases where
it differs from the first setting (+more / -less), and p50 / p95 wall ms of the timed plans;
then every case that differs. Compare settings within one run: wall times move with the
machine's load, placed priority does not (every limit is counted work).

Exit status: 0; 2 on a bad SETTING (or two with one name); 1 when a setting's run fails.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import pct  # noqa: E402

DEFAULT_FAMILIES = "auto,cpx,shares,pinned-tp"


def parse_setting(text: str) -> tuple[str, list[tuple[str, str, object]]]:
    """``name:module.CONST=value,...`` -> (name, [(module, constant, value)]); ValueError on bad input."""
    if text == "default":
        return "default", []
    name, sep, body = text.partition(":")
    if not sep or not name or not body:
        raise ValueError(f"setting {text!r}: expected 'default' or 'name:module.CONSTANT=value[,...]'")
    out = []
    for part in body.split(","):
        target, eq, literal = part.partition("=")
        module, dot, const = target.strip().rpartition(".")
        if not eq or not dot or not const.isupper():
            raise ValueError(f"setting {text!r}: {part!r} is not module.CONSTANT=value")
        try:
            value = ast.literal_eval(literal.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"setting {text!r}: {literal!r} is not a Python literal") from None
        out.append((module, const, value))
    return name, out


def apply_check(changes) -> None:
    """ValueError unless every module and constant of ``changes`` exists (nothing is set)."""
    for module_name, const, _value in changes:
        try:
            module = importlib.import_module(f"gpu_sharing.planner.{module_name}")
        except ImportError:
            raise ValueError(f"no module gpu_sharing.planner.{module_name}") from None
        if not hasattr(module, const):
            raise ValueError(f"gpu_sharing.planner.{module_name} has no constant {const}")


def apply(changes: list[tuple[str, str, object]]) -> None:
    """Set each constant in gpu_sharing.planner.<module>, and in the defaults of that module's
    functions whose parameter is the constant's name in lower case."""
    apply_check(changes)
    for module_name, const, value in changes:
        module = importlib.import_module(f"gpu_sharing.planner.{module_name}")
        setattr(module, const, value)
        for fn in vars(module).values():
            if not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            if fn.__defaults__:  # the last len(__defaults__) positional parameters
                names = fn.__code__.co_varnames[:fn.__code__.co_argcount][-len(fn.__defaults__):]
                fn.__defaults__ = tuple(value if n == const.lower() else d for n, d in zip(names, fn.__defaults__))
            if fn.__kwdefaults__ and const.lower() in fn.__kwdefaults__:
                fn.__kwdefaults__[const.lower()] = value


def run_setting(changes, seeds: list[int], cases: int, families: list[str]) -> dict:
    """{"family/seed/case": [timed placed, timed ms, re-plan placed]} under ``changes``."""
    apply(changes)
    from plan_digest import every_plan
    from reference_optimum import placed_priority
    out = {}
    for family, seed, case, label, p, demands, seconds in every_plan(families, seeds, cases):
        row = out.setdefault(f"{family}/{seed}/{case}", [None, None, None])
        if label == "timed":
            row[0], row[1] = placed_priority(p, demands), round(seconds * 1000, 1)
        elif label == "replan":
            row[2] = placed_priority(p, demands)
    return out


def report(results: dict[str, dict], families: list[str]) -> list[str]:
    """The table and the differing cases (see the module docstring)."""
    names = list(results)
    first = results[names[0]]
    lines = [f"{'family':<10} {'setting':<14} {'placed':>7} {'diff':>6} {'re-plan':>7} {'diff':>6} "
             f"{'p50 ms':>7} {'p95 ms':>7}"]
    for family in families:
        keys = [k for k in first if k.split("/")[0] == family]
        for name in names:
            rows = results[name]

            def diff(i: int) -> str:
                more = sum(1 for k in keys if (rows[k][i] or 0) > (first[k][i] or 0))
                less = sum(1 for k in keys if (rows[k][i] or 0) < (first[k][i] or 0))
                return f"+{more}-{less}"
            times = [rows[k][1] for k in keys]
            lines.append(f"{family:<10} {name:<14} {sum(rows[k][0] for k in keys):>7} {diff(0):>6} "
                         f"{sum(rows[k][2] or 0 for k in keys):>7} {diff(2):>6} "
                         f"{pct(times, 0.5):>7.1f} {pct(times, 0.95):>7.1f}")
    for name in names[1:]:
        for k, row in results[name].items():
            for i, what in ((0, "timed"), (2, "re-plan")):
                if row[i] != first[k][i]:
                    lines.append(f"{name}: {k} {what} {first[k][i]} -> {row[i]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("settings", nargs="+", help="'default' or name:module.CONSTANT=value[,...]")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--families", default=DEFAULT_FAMILIES)
    ap.add_argument("--json", action="store_true", help="print the per-case results as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    families = args.families.split(",")
    try:
        parsed = [parse_setting(s) for s in args.settings]
        if args.child:
            print(json.dumps(run_setting(parsed[0][1], seeds, args.cases, families)))
            return 0
        names = [name for name, _changes in parsed]
        if len(set(names)) < len(names):
            raise ValueError(f"two settings share a name: {', '.join(names)}")
        for _name, changes in parsed:  # every module and constant exists, before any long run
            apply_check(changes)
    except ValueError as e:
        print(f"planner_knobs: {e}", file=sys.stderr)
        return 2
    results = {}
    for (name, _changes), text in zip(parsed, args.settings):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--child", "--seeds", args.seeds, "--cases",
                               str(args.cases), "--families", args.families, text],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"planner_knobs: setting {name} failed (exit {done.returncode}):\n{done.stderr}", file=sys.stderr)
            return 1
        results[name] = json.loads(done.stdout)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("\n".join(report(results, families)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
