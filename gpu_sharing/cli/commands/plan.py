"""``gpu-sharing plan``: what would change, like ``terraform plan``, without touching anything.

``+`` start, ``-`` stop, ``~`` repartition, ``=`` unchanged, then unplaceable replicas with
reasons and the solver line. ``--detailed-exitcode``: 0 no change, 2 changes, 1 error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.cli.commands import _fleet
from gpu_sharing.cli.commands._runtime_common import add_runtime_flags, make_backend, plan_from_flags, state_dir
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.reconcile.cu_sharing import cu_masks_for
from gpu_sharing.reconcile.drain import drain_reason
from gpu_sharing.runtime.state_file import read_state

SYMBOL = {"start": "+", "stop": "-", "repartition": "~", "unchanged": "="}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show what apply would change (exit 0; --detailed-exitcode: 2 = changes)")
    common.add_config_flag(p)
    common.add_simulate_flags(p)
    common.add_json_flag(p)
    add_runtime_flags(p)
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no change, 2 changes pending, 1 error")
    _fleet.add_fleet_flag(p)  # --fleet: see _fleet.py
    p.set_defaults(func=run)


def plan_json(plan) -> dict:
    return {
        "gpus": [{"gpu": t.gpu, "compute_partition": t.compute_mode.value, "memory_partition": t.memory_mode.value,
                  "compute_changes": t.compute_changes, "memory_changes": t.memory_changes} for t in plan.gpus],
        "placements": [{"instance": p.instance_id, "model": p.model, "replica": p.replica, "gpu": p.gpu,
                        "partitions": [str(r) for r in p.partitions], "memory_bytes_per_rank": p.memory_bytes_per_rank,
                        "tp": p.tp, "memory_fraction": round(p.memory_fraction, 4),
                        "compute_units": p.compute_units} for p in plan.placements],
        "unplaceable": [{"model": u.model, "replica": u.replica, "reason": u.reason} for u in plan.unplaceable],
        "actions": [{"kind": a.kind.value, "target": a.target, "detail": a.detail} for a in plan.actions],
        "solver": common.to_jsonable(plan.solver),
        "needs_driver_reload": plan.needs_driver_reload,
        "has_changes": plan.has_changes,
        "warnings": list(plan.warnings),
        "drain_required": plan.drain_required,
        "drained": list(plan.drained),
        "disruption": plan.disruption,
    }


def contract_rows(cfg, plan, config_dir: Path) -> dict[str, dict]:
    """Per placement, the numbers its vLLM argv will carry (runtime.launch_contract: the same function the
    launch uses), so `plan` shows the context, sequences, batched tokens and memory fraction vLLM gets."""
    from gpu_sharing.errors import UserError
    from gpu_sharing.runtime.launch_contract import launch_contract

    models = {m.name: m for m in cfg.models}
    out: dict[str, dict] = {}
    for p in plan.placements:
        model = models.get(p.model)
        if model is None:
            continue
        try:
            c = launch_contract(model, tp=p.tp, budget_bytes=p.memory_bytes_per_rank, config_dir=config_dir)
        except UserError:
            continue
        out[p.instance_id] = {"max_model_len": c.max_model_len, "max_model_len_auto": c.max_model_len_auto,
                              "max_num_seqs": c.max_num_seqs, "max_num_batched_tokens": c.max_num_batched_tokens,
                              "gpu_memory_utilization": c.memory_fraction(p.partition_bytes) if p.partition_bytes else None,
                              "budget_bytes_per_rank": c.budget.total_bytes}
    return out
def cu_mask_restarts(args: argparse.Namespace, cfg, plan) -> dict[str, str]:
    """Running instances ``apply`` would restart to rebalance CU masks for a newcomer (reconcile/cu_sharing.py),
    from the masks recorded in the state file; {} when that cannot be read."""
    if not plan.to_start:
        return {}
    try:
        inventory = make_backend(args, cfg).inventory()
        running = {e.instance_id: dict(e.env).get("HSA_CU_MASK") for e in read_state(state_dir(args, cfg))
                   if e.pid is not None}
        return dict(cu_masks_for(plan, inventory, cfg, running).reasons)
    except (GpuSharingError, ValueError, OSError):
        return {}


def run(args: argparse.Namespace) -> int:
    if args.fleet:  # a fleet of Kubernetes nodes: no local GPU needed (_fleet.py)
        return _fleet.plan_view(args)
    path, cfg = common.load(args)
    result = plan_from_flags(args, cfg, path)
    plan, problems = result.plan, result.desired.problems
    out = plan_json(plan)
    contracts = contract_rows(result.desired.config, plan, Path(path).resolve().parent)
    for row in out["placements"]:
        row.update(contracts.get(row["instance"], {}))
    out["unplaceable"] += [{"model": u.model, "replica": u.replica, "reason": u.reason} for u in problems]
    out["drain"] = drain_reason(plan, cfg)
    out["cu_mask_restarts"] = cu_mask_restarts(args, cfg, plan)
    if args.json:
        common.print_json(out)
    else:
        for a in plan.actions:
            print(f"{SYMBOL[a.kind.value]} {a.kind.value:<11} {a.target:<28} {a.detail}".rstrip())
        if not plan.actions:
            print("No instances in the plan.")
        for u in out["unplaceable"]:
            print(f"! unplaceable {u['model']}-{u['replica']}: {u['reason']}")
        for w in plan.warnings:
            print(f"! warning: {w}")
        for iid, why in out["cu_mask_restarts"].items():
            print(f"~ restart     {iid:<28} {why}")
        if out["drain"]:
            print(f"! drain       node{'':<24} {out['drain']}: every instance stops, then starts again")
        if contracts:
            print("\nLaunch contracts (passed to vLLM as sized):")
            common.print_table(["INSTANCE", "MAX-MODEL-LEN", "SEQS", "BATCHED", "GPU-MEM-UTIL", "GIB/RANK"],
                               [[iid, f"{c['max_model_len'] or 'auto'}{' (auto-fit)' if c['max_model_len_auto'] else ''}",
                                 c["max_num_seqs"], c["max_num_batched_tokens"], f"{c['gpu_memory_utilization'] or 0:.4f}",
                                 f"{c['budget_bytes_per_rank'] / 2**30:.2f}"] for iid, c in sorted(contracts.items())])
        s = plan.solver
        starts, stops, reparts = len(plan.to_start), len(plan.to_stop), len(plan.to_repartition)
        print(f"\nPlan: {starts} to start, {stops} to stop, {reparts} to repartition, {len(plan.unchanged)} unchanged, "
              f"{len(out['unplaceable'])} unplaceable.")
        print(f"Solver: {s.name}, objective {s.objective:g} of bound {s.bound:g} (gap {s.gap:.1%}); {s.status}")
    if args.detailed_exitcode:
        return 2 if plan.has_changes else 0
    return 0
