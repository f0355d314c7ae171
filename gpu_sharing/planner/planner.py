"""plan(): choose partition modes and placements together (pure, deterministic).

Search: start from the current modes (least disruption), pack (packing.py), then
improve by local search over each GPU's allowed compute modes (pinned modes are
fixed; memory modes change only with allow_driver_reload and hive-wide). A mode
change is accepted only when it improves the lexicographic objective:
placed priority, placed count, less disruption, fewer partitions used.
Same input, same plan: every iteration order is sorted.
"""

from __future__ import annotations

from typing import Sequence

from gpu_sharing.hardware.catalog import GpuModelSpec, get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.planner.packing import Packing, build_slots, items_for, pack
from gpu_sharing.planner.reasons import unplaceable_reason
from gpu_sharing.planner.types import (Action, ActionKind, GpuTarget, ModelDemand, Placement, Plan, PlannerPolicy,
                                       RunningInstance, SolverInfo, Unplaceable)

MAX_ROUNDS = 4


def _specs(inventory: Inventory) -> dict[int, GpuModelSpec]:
    return {g.index: get_spec(g.model) for g in inventory.gpus}


def _memory_targets(inventory: Inventory, policy: PlannerPolicy, specs) -> dict[int, MemoryPartitionMode]:
    pinned = {p.gpu: p.memory_mode for p in policy.gpus if p.memory_mode is not None}
    out = {}
    for g in inventory.gpus:
        want = pinned.get(g.index)
        out[g.index] = want if (want is not None and policy.allow_driver_reload) else g.memory_mode
    for hive in {g.hive_id for g in inventory.gpus}:  # NPS is hive-wide: one pinned value wins for all
        members = [g for g in inventory.gpus if g.hive_id == hive]
        wanted = {out[g.index] for g in members if out[g.index] != g.memory_mode}
        if len(wanted) == 1:
            for g in members:
                out[g.index] = next(iter(wanted))
    return out


def _candidates(inventory, policy, specs, memory) -> dict[int, list[ComputePartitionMode]]:
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    out = {}
    for g in inventory.gpus:
        spec = specs[g.index]
        if g.index in pinned:
            out[g.index] = [pinned[g.index]]
        else:
            modes = [c for c in spec.compute_modes() if spec.is_valid(c, memory[g.index])]
            out[g.index] = sorted(modes, key=lambda c: (c != g.compute_mode, spec.partitions(c)))
    return out


def _evaluate(inventory, demands, current, policy, specs, modes) -> tuple[Packing, int]:
    fp = {d.name: d.fingerprint for d in demands}
    keep = {r.instance_id: r for r in current
            if fp.get(r.model) == r.fingerprint
            and all(modes[ref.gpu] == inventory.gpu(ref.gpu).compute_mode for ref in r.partitions)}
    best: tuple[Packing, int] | None = None
    for order in ("priority", "size"):  # priority-first greedy, and first-fit decreasing; keep the better
        packing = pack(build_slots(inventory, modes, specs, policy), items_for(demands), keep, policy, order)
        disruption = sum(1 for r in current if r.instance_id not in packing.assignments
                         or tuple(packing.assignments[r.instance_id].refs) != tuple(r.partitions))
        disruption += sum(3 for g in inventory.gpus if modes[g.index] != g.compute_mode)
        if best is None or packing.objective(disruption) > best[0].objective(best[1]):
            best = (packing, disruption)
    return best


def plan(inventory: Inventory, demands: Sequence[ModelDemand], current: Sequence[RunningInstance],
         policy: PlannerPolicy) -> Plan:
    specs = _specs(inventory)
    memory = _memory_targets(inventory, policy, specs)
    candidates = _candidates(inventory, policy, specs, memory)
    modes = {g.index: (g.compute_mode if g.compute_mode in candidates[g.index] else candidates[g.index][0])
             for g in inventory.gpus}
    best, disruption = _evaluate(inventory, demands, current, policy, specs, modes)
    best_obj = best.objective(disruption)
    evaluations = 1
    everything = sum(d.priority + 1 for d in demands for _ in range(d.replicas))
    rounds = 0 if (best_obj[0] == everything and disruption == 0) else MAX_ROUNDS  # nothing a mode change can improve
    for _ in range(rounds):
        improved = False
        for g in sorted(inventory.gpus, key=lambda g: g.index):
            for mode in candidates[g.index]:
                if mode == modes[g.index]:
                    continue
                trial = {**modes, g.index: mode}
                packing, dis = _evaluate(inventory, demands, current, policy, specs, trial)
                evaluations += 1
                if packing.objective(dis) > best_obj:
                    modes, best, best_obj, improved = trial, packing, packing.objective(dis), True
        if not improved:
            break
    return _to_plan(inventory, demands, current, policy, specs, modes, memory, best, best_obj, evaluations)


def _to_plan(inventory, demands, current, policy, specs, modes, memory, packing: Packing, obj, evaluations) -> Plan:
    targets = tuple(GpuTarget(g.index, modes[g.index], memory[g.index],
                              compute_changes=modes[g.index] != g.compute_mode,
                              memory_changes=memory[g.index] != g.memory_mode) for g in inventory.gpus)
    by_ref = {s.ref: s for s in packing.slots.values()}
    placements = tuple(sorted((
        Placement(a.item.instance_id, a.item.model, a.item.replica, a.refs, a.tp, a.bytes_per_rank,
                  by_ref[a.refs[0]].total_bytes, a.item.demand.compute_share)
        for a in packing.assignments.values()), key=lambda p: (p.partitions, p.instance_id)))
    running = {r.instance_id: r for r in current}
    fp = {d.name: d.fingerprint for d in demands}
    changed_gpus = {t.gpu for t in targets if t.compute_changes or t.memory_changes}
    unchanged, to_start = [], []
    for p in placements:
        r = running.get(p.instance_id)
        if (r and r.fingerprint == fp.get(p.model) and tuple(r.partitions) == p.partitions
                and not any(ref.gpu in changed_gpus for ref in p.partitions)):
            unchanged.append(p.instance_id)
        else:
            to_start.append(p)
    keep_ids = set(unchanged)
    to_stop = tuple(sorted(r.instance_id for r in current if r.instance_id not in keep_ids))
    to_repartition = tuple(t for t in targets if t.compute_changes or t.memory_changes)
    unplaceable = tuple(Unplaceable(i.model, i.replica, unplaceable_reason(i, inventory, specs, policy, memory, packing))
                        for i in sorted(packing.unplaced, key=lambda i: (i.model, i.replica)))
    actions = tuple(
        [Action(ActionKind.STOP, iid, _stop_detail(iid, running, packing)) for iid in to_stop]
        + [Action(ActionKind.REPARTITION, f"gpu {t.gpu}",
                  f"{inventory.gpu(t.gpu).compute_mode.value}+{inventory.gpu(t.gpu).memory_mode.value} -> "
                  f"{t.compute_mode.value}+{t.memory_mode.value}") for t in to_repartition]
        + [Action(ActionKind.START, p.instance_id, f"on {','.join(str(r) for r in p.partitions)} tp={p.tp} "
                  f"{p.memory_bytes_per_rank / 2**30:.1f} GiB/rank") for p in to_start]
        + [Action(ActionKind.UNCHANGED, iid) for iid in unchanged])
    bound = sum(d.priority + 1 for d in demands for _ in range(d.replicas))
    gap = 0.0 if bound == 0 else max(0.0, (bound - obj[0]) / bound)
    return Plan(gpus=targets, placements=placements, to_start=tuple(to_start), to_stop=to_stop,
                to_repartition=to_repartition, unchanged=tuple(unchanged), unplaceable=unplaceable, actions=actions,
                solver=SolverInfo("greedy-local-search", float(obj[0]), float(bound), gap,
                                  status=f"{evaluations} layouts evaluated; bound = all replicas placed"),
                needs_driver_reload=any(t.memory_changes for t in targets))


def _stop_detail(iid: str, running: dict[str, RunningInstance], packing: Packing) -> str:
    if iid in packing.evicted_by:
        return f"evicted by higher-priority {packing.evicted_by[iid]}"
    if iid in packing.assignments:
        return "moves or restarts (changed options or repartition)"
    return "no longer in the config" if all(a.item.model != running[iid].model for a in packing.assignments.values()) else "not placed"
