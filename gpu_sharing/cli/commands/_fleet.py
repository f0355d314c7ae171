"""The ``--fleet FILE`` views of ``plan`` and ``kserve export``: a fleet of Kubernetes nodes.

Kept apart from plan.py and kserve.py so those stay about the local node; both only
branch here when ``--fleet`` is given. Nothing here opens a GPU backend.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.config.fleet_schema import load_fleet
from gpu_sharing.errors import UserError
from gpu_sharing.reconcile.fleet_export import build_fleet_files
from gpu_sharing.reconcile.fleet_plan import FleetResult, plan_for_fleet

GIB = 1024**3


def add_fleet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", metavar="FILE", help="plan a fleet of Kubernetes nodes (AMD GPU Operator + KServe) "
                   "described in FILE instead of this node; needs no GPU (see `gpu-sharing schema --fleet`)")


def _plan(args: argparse.Namespace):
    path, cfg = common.load(args)
    fleet = load_fleet(args.fleet)
    return cfg, fleet, plan_for_fleet(cfg, fleet, config_dir=Path(path).resolve().parent)


def fleet_json(result: FleetResult) -> dict:
    plan = result.plan
    per_profile: dict[str, dict] = {}
    for n in plan.nodes:
        entry = per_profile.setdefault(n.profile.name, {"profile": n.profile.name, "nodes": [],
                                                        "dcm": n.profile.to_json()})
        entry["nodes"].append(n.node)
    models: dict[str, dict] = {}
    for p in plan.placements:
        m = models.setdefault(p.model, {"model": p.model, "replicas": 0, "resource": p.kind.resource, "tp": p.tp,
                                        "partition_bytes": p.partition_bytes,
                                        "memory_bytes_per_rank": p.memory_bytes_per_rank, "nodes": {}})
        m["replicas"] += 1
        m["nodes"][p.node] = m["nodes"].get(p.node, 0) + 1
    unplaceable = [{"model": u.model, "replica": u.replica, "reason": u.reason}
                   for u in (*plan.unplaceable, *result.problems)]
    return {"profiles": list(per_profile.values()), "models": list(models.values()), "unplaceable": unplaceable,
            "solver": common.to_jsonable(plan.solver), "compute_objective": plan.compute_objective,
            "distinct_profiles": plan.distinct_profiles, "warnings": list(plan.warnings)}


def plan_view(args: argparse.Namespace) -> int:
    _cfg, _fleet, result = _plan(args)
    out = fleet_json(result)
    if args.json:
        common.print_json(out)
        return 0
    print("Profiles:")
    for p in out["profiles"]:
        print(f"  {p['profile']:<34} {len(p['nodes']):>4} nodes  {', '.join(p['nodes'][:4])}"
              + (" ..." if len(p["nodes"]) > 4 else ""))
    print("Models:")
    for m in out["models"]:
        where = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(m["nodes"].items()))
        print(f"  {m['model']:<24} {m['replicas']:>3} replicas  {m['resource']} x{m['tp']} "
              f"({m['memory_bytes_per_rank'] / GIB:.1f} of {m['partition_bytes'] / GIB:.0f} GiB/rank)  on {where}")
    for u in out["unplaceable"]:
        print(f"! unplaceable {u['model']}-{u['replica']}: {u['reason']}")
    for w in out["warnings"]:
        print(f"warning: {w}")
    s = result.plan.solver
    print(f"\nFleet: {len(result.plan.nodes)} nodes, {out['distinct_profiles']} profiles, "
          f"{len(result.plan.placements)} replicas placed, {len(out['unplaceable'])} unplaceable.")
    print(f"Solver: {s.name}, placed priority {s.objective:g} of bound {s.bound:g} (gap {s.gap:.2%}); {s.status}")
    return 0


def export(args: argparse.Namespace) -> int:
    if not args.out:
        raise UserError("kserve export --fleet writes several files (ConfigMap, label script, manifests): pass --out DIR")
    if getattr(args, "namespace", None):
        raise UserError("--namespace: with --fleet, set kserve.namespace in the fleet file (it bounds the name length)")
    cfg, fleet, result = _plan(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for f in build_fleet_files(cfg, fleet, result.plan):
        target = out / f.name
        target.write_text(f.text)
        if f.executable:
            os.chmod(target, 0o755)
        print(target)
    s = result.plan.solver
    missing = len(result.plan.unplaceable) + len(result.problems)
    print(f"placed priority {s.objective:g} of bound {s.bound:g} (gap {s.gap:.2%}); {missing} replicas unplaceable "
          f"(see `gpu-sharing plan --fleet {args.fleet}`)", file=sys.stderr)
    return 0
