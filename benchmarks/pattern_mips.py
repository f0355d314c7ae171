"""The pattern step's MIPs, captured once and solved again offline under other CP-SAT settings.

    python benchmarks/pattern_mips.py capture DIR [--seeds 1] [--cases 20] [--families cpx,pinned-tp,auto,shares,nps]
    python benchmarks/pattern_mips.py compare DIR [--det 0.15] [--json] SETTING [SETTING ...]

``capture`` plans benchmarks/planner.py's cases (plan_digest.every_plan: the same random
streams, fresh plans and re-plans) and writes every MIP the pattern step hands to CP-SAT
(pattern_mip.solve_integer: columns, layouts, instances, the hint and the objective window) to
DIR as ``<family>_<n>.pbtxt``, with ``index.json``: the value the planner's searches reached on
each (``planned``). ``compare`` solves each file again: ``current`` is the planner's own pair of
searches (pattern_mip.SEARCHES, the same _run_all), any other SETTING is one CP-SAT search,
one worker, ``name:param=value[,param=value...]`` over CP-SAT's SatParameters (enum values by
name: ``lp:search_branching=LP_SEARCH,random_seed=1``), each under ``--det`` deterministic
seconds. It prints per family and setting: objective summed, models where it reaches the best
value any setting reached in this run, models proven optimal, and wall seconds summed.

Why: on most cases of the cpx, pinned-tp and shares families CP-SAT over the columns is most of
plan()'s time (planner_phases.py), and its settings were compared through whole plans
(planner_knobs.py, minutes a run, every change rippling into the steps after it). Here one
run over seed 1's 64 MIPs takes about 40 s and compares the MIP alone. The end-to-end check
stays planner_knobs.py: a setting that wins here must win there too.

Exit status: 0; 2 on a bad SETTING or an empty DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ortools.sat.python import cp_model  # noqa: E402

import gpu_sharing.planner.pattern_mip as pattern_mip  # noqa: E402
from gpu_sharing.planner.pattern_master import MIP_DETERMINISTIC_S  # noqa: E402

DEFAULT_FAMILIES = "cpx,pinned-tp,auto,shares,nps"


def capture(out: Path, families: list[str], seeds: list[int], cases: int) -> dict[str, float | None]:
    """Plan the cases with every pattern MIP written to ``out``; {file name: value the planner's
    searches reached, or None}. The hook is removed afterwards."""
    from plan_digest import every_plan
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, float | None] = {}
    family = [""]
    original = pattern_mip._run_all

    def recording(searches, at_least=None):
        name = f"{family[0]}_{len(index):03d}.pbtxt"
        searches[0].model.ExportToFile(str(out / name))
        done = original(searches, at_least)
        index[name] = done[0].ObjectiveValue() if done else None
        return done
    pattern_mip._run_all = recording
    try:
        for f in families:
            family[0] = f
            for _row in every_plan([f], seeds, cases):
                pass
    finally:
        pattern_mip._run_all = original
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


def parse_setting(text: str) -> tuple[str, dict]:
    """``current`` or ``name:param=value,...`` -> (name, {param: value}); ValueError on bad input."""
    if text == "current":
        return "current", {}
    name, sep, body = text.partition(":")
    if not sep or not name or not body:
        raise ValueError(f"setting {text!r}: expected 'current' or 'name:param=value[,...]'")
    params = {}
    probe = cp_model.CpSolver().parameters
    for part in body.split(","):
        key, eq, raw = (s.strip() for s in part.partition("="))
        if not eq or not hasattr(probe, key):
            raise ValueError(f"setting {text!r}: {key!r} is not a CP-SAT parameter (param=value)")
        if hasattr(cp_model, raw):
            value = getattr(cp_model, raw)
        elif raw in ("True", "False"):
            value = raw == "True"
        else:
            try:
                value = float(raw) if "." in raw else int(raw)
            except ValueError:
                raise ValueError(f"setting {text!r}: {raw!r} is not a number, True/False or a cp_model name") from None
        params[key] = value
    return name, params


def load(path: Path) -> cp_model.CpModel:
    m = cp_model.CpModel()
    m.Proto().merge_text_format(path.read_text())
    return m


def at_least(model: cp_model.CpModel) -> int | None:
    """The starting plan's value the captured model requires (solve_integer's ``obj >= at_least``:
    the linear constraint over exactly the objective's variables with a lower bound)."""
    proto = model.Proto()
    objective = sorted(proto.objective.vars)
    for c in proto.constraints:
        domain = list(c.linear.domain)
        if not c.enforcement_literal and sorted(c.linear.vars) == objective and domain and domain[0] > -2**62:
            return domain[0]
    return None


def solve(model: cp_model.CpModel, params: dict, det_s: float) -> tuple[float | None, bool, float]:
    """(objective or None, proven optimal, wall s): the planner's pair for ``current`` (no
    params), else one search under ``params``."""
    t0 = time.perf_counter()
    if not params:
        done = pattern_mip._run_all(pattern_mip.searches_of(model, det_s, 60.0), at_least(model))
        wall = time.perf_counter() - t0
        return (done[0].ObjectiveValue(), done[1] == cp_model.OPTIMAL, wall) if done else (None, False, wall)
    s = pattern_mip._search(model, {}, det_s, 60.0).solver  # the planner's base settings (one worker)
    for key, value in params.items():
        setattr(s.parameters, key, value)
    status = s.Solve(model)
    wall = time.perf_counter() - t0
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    return (s.ObjectiveValue() if found else None), status == cp_model.OPTIMAL, wall


def compare(folder: Path, settings: list[tuple[str, dict]], det_s: float) -> dict[str, dict[str, list]]:
    """{file: {setting: [objective, optimal, wall s]}} over every captured MIP in ``folder``."""
    out: dict[str, dict[str, list]] = {}
    for path in sorted(folder.glob("*.pbtxt")):
        model = load(path)
        out[path.name] = {name: list(solve(model, params, det_s)) for name, params in settings}
    return out


def table(results: dict[str, dict[str, list]], names: list[str]) -> list[str]:
    families = sorted({f.rsplit("_", 1)[0] for f in results})
    lines = [f"{'family':<10} {'setting':<14} {'MIPs':>5} {'objective':>10} {'=best':>6} {'proven':>7} {'wall s':>7}"]
    for family in families:
        files = [f for f in results if f.rsplit("_", 1)[0] == family]
        best = {f: max((r[0] or 0) for r in results[f].values()) for f in files}
        for name in names:
            rows = [results[f][name] for f in files]
            lines.append(f"{family:<10} {name:<14} {len(files):>5} {sum(r[0] or 0 for r in rows):>10.0f} "
                         f"{sum(1 for f in files if (results[f][name][0] or 0) >= best[f]):>6} "
                         f"{sum(1 for r in rows if r[1]):>7} {sum(r[2] for r in rows):>7.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("dir", type=Path)
    cap.add_argument("--seeds", default="1")
    cap.add_argument("--cases", type=int, default=20)
    cap.add_argument("--families", default=DEFAULT_FAMILIES)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("dir", type=Path)
    cmp_.add_argument("--det", type=float, default=MIP_DETERMINISTIC_S)
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("settings", nargs="+")
    args = ap.parse_args(argv)
    if args.verb == "capture":
        index = capture(args.dir, args.families.split(","), [int(s) for s in args.seeds.split(",")], args.cases)
        print(f"{len(index)} MIPs written to {args.dir}")
        return 0
    try:
        settings = [parse_setting(s) for s in args.settings]
    except ValueError as e:
        print(f"pattern_mips: {e}", file=sys.stderr)
        return 2
    if not list(args.dir.glob("*.pbtxt")):
        print(f"pattern_mips: no captured MIPs (*.pbtxt) in {args.dir}: run 'capture' first", file=sys.stderr)
        return 2
    results = compare(args.dir, settings, args.det)
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
    else:
        print("\n".join(table(results, [n for n, _p in settings])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
