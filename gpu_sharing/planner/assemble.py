"""A solved packing becomes the frozen Plan: targets, placements with their compute, actions, drain (pure).

Why here and not in the solvers: what an operator reads (who stops, who starts, what compute
each instance gets, whether the node must be drained) follows from the chosen modes and
placements alone, whatever solver chose them.

Honest disruption: where a compute-mode change needs every GPU process on the node stopped
(``PlannerPolicy.repartition_drains_node``: no device cgroups, see the real-node issue), a
plan that changes any GPU's compute mode while instances run stops all of them. Those the plan
would otherwise keep are listed in ``Plan.drained``, stopped and started again after the
repartition, and counted in ``Plan.disruption`` like every other instance the plan stops.
"""

from __future__ import annotations

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.planner.packing import Packing
from gpu_sharing.planner.problem import cu_cost, partition_cus as partition_cus_of
from gpu_sharing.planner.reasons import unplaceable_reasons
from gpu_sharing.planner.types import (Action, ActionKind, GpuTarget, Placement, Plan, PlannerPolicy, RunningInstance,
                                       SolverInfo, Unplaceable)


def partition_cus(inventory, modes) -> dict:
    """PartitionRef-like (gpu, index) -> CUs of that partition in its target mode."""
    out = {}
    for g in inventory.gpus:
        out.update({(g.index, k): cus for k, cus in enumerate(partition_cus_of(g, get_spec(g.model), modes[g.index]))})
    return out


def compute_units(packing: Packing, cus: dict) -> dict[str, int]:
    """instance id -> CUs over all its ranks, by isolation/cu_masks.py's rule: an explicit
    share gets floor(share x CUs), a CU count (limits.cu_count) that count; instances without
    either split what the others leave equally."""
    tenants: dict[tuple[int, int], list] = {}
    for a in packing.assignments.values():
        for r in a.refs:
            tenants.setdefault((r.gpu, r.index), []).append(a)
    out: dict[str, int] = {}
    for key, here in tenants.items():
        total = cus.get(key, 0)
        explicit = {a.item.instance_id: cu_cost(a.item.demand.cu_request, total)
                    for a in here if a.item.demand.cu_request}  # a share or a CU count
        rest = [a for a in here if not a.item.demand.cu_request]
        left = max(0, total - sum(explicit.values()))
        for a in here:
            got = explicit.get(a.item.instance_id, left // len(rest) if rest else 0)
            out[a.item.instance_id] = out.get(a.item.instance_id, 0) + got
    return out


def to_plan(inventory, demands, current, policy: PlannerPolicy, modes, memory, packing: Packing,
            info: SolverInfo, warnings: tuple[str, ...] = ()) -> Plan:
    specs = {g.index: get_spec(g.model) for g in inventory.gpus}
    targets = tuple(GpuTarget(g.index, modes[g.index], memory[g.index],
                              compute_changes=modes[g.index] != g.compute_mode,
                              memory_changes=memory[g.index] != g.memory_mode) for g in inventory.gpus)
    by_ref = {s.ref: s for s in packing.slots.values()}
    cus = compute_units(packing, partition_cus(inventory, modes))
    placements = tuple(sorted((
        Placement(a.item.instance_id, a.item.model, a.item.replica, a.refs, a.tp, a.bytes_per_rank,
                  by_ref[a.refs[0]].total_bytes, a.item.demand.compute_share, cus.get(a.item.instance_id, 0))
        for a in packing.assignments.values()), key=lambda p: (p.partitions, p.instance_id)))
    running = {r.instance_id: r for r in current}
    fp = {d.name: d.fingerprint for d in demands}
    changed_gpus = {t.gpu for t in targets if t.compute_changes or t.memory_changes}
    unchanged, to_start = [], []
    for p in placements:
        r = running.get(p.instance_id)
        if (r and r.fingerprint == fp.get(p.model) and tuple(r.partitions) == p.partitions
                and not any(ref.gpu in changed_gpus for ref in p.partitions)):
            unchanged.append(p)
        else:
            to_start.append(p)
    drain = policy.repartition_drains_node and bool(current) and any(t.compute_changes for t in targets)
    drained = tuple(sorted(p.instance_id for p in unchanged)) if drain else ()
    if drain:  # the drain stops them; they start again, where they were, after the repartition
        to_start, unchanged = sorted(to_start + unchanged, key=lambda p: (p.partitions, p.instance_id)), []
    keep_ids = {p.instance_id for p in unchanged}
    to_stop = tuple(sorted(r.instance_id for r in current if r.instance_id not in keep_ids))
    to_repartition = tuple(t for t in targets if t.compute_changes or t.memory_changes)
    left_out = sorted(packing.unplaced, key=lambda i: (i.model, i.replica))
    unplaceable = tuple(Unplaceable(i.model, i.replica, reason) for i, reason in
                        zip(left_out, unplaceable_reasons(left_out, inventory, specs, policy, memory, packing)))
    changed = ", ".join(f"gpu {t.gpu}" for t in to_repartition if t.compute_changes)
    actions = tuple(
        [Action(ActionKind.STOP, iid, f"node-wide drain for the compute-mode change of {changed}" if iid in drained
                else _stop_detail(iid, running, packing)) for iid in to_stop]
        + [Action(ActionKind.REPARTITION, f"gpu {t.gpu}",
                  f"{inventory.gpu(t.gpu).compute_mode.value}+{inventory.gpu(t.gpu).memory_mode.value} -> "
                  f"{t.compute_mode.value}+{t.memory_mode.value}") for t in to_repartition]
        + [Action(ActionKind.START, p.instance_id, f"on {','.join(str(r) for r in p.partitions)} tp={p.tp} "
                  f"{p.memory_bytes_per_rank / 2**30:.1f} GiB/rank, {p.compute_units} CUs") for p in to_start]
        + [Action(ActionKind.UNCHANGED, p.instance_id) for p in unchanged])
    return Plan(gpus=targets, placements=placements, to_start=tuple(to_start), to_stop=to_stop,
                to_repartition=to_repartition, unchanged=tuple(p.instance_id for p in unchanged),
                unplaceable=unplaceable, actions=actions, solver=info,
                needs_driver_reload=any(t.memory_changes for t in targets), warnings=tuple(warnings),
                drain_required=drain, drained=drained, disruption=len(to_stop))


def _stop_detail(iid: str, running: dict[str, RunningInstance], packing: Packing) -> str:
    if iid in packing.evicted_by:
        return f"evicted by higher-priority {packing.evicted_by[iid]}"
    if iid in packing.assignments:
        return "moves or restarts (changed options or repartition)"
    if all(a.item.model != running[iid].model for a in packing.assignments.values()):
        return "no longer in the config"
    return "not placed"
