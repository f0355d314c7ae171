"""Reasons a person can act on, for replicas the planner could not place (pure).

A reason names the constraint that binds, found by asking what would change the answer:
on the empty node (nothing else placed), does one instance fit under the config as it is?
If not, does it fit with the compute-mode pins lifted (the pin binds), with a driver reload
allowed (the reload setting binds), with every GPU in one XGMI hive (the hive binds), over
the full feasible set instead of ``planner.prefer_local_tp``'s rules (the rule binds)?
Only when it fits alone is the room taken by other replicas, and only then is priority
named, with "add GPUs" as a remedy (more GPUs would give it room). The empty-node test
looks at each GPU's layouts on their own (NPS is hive-wide; a hive's GPUs may differ), which
is exact for the nodes in the catalog, where NPS1 allows every compute mode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.planner.packing import Item, Packing
from gpu_sharing.planner.problem import build_problem, smallest_fitting_tp
from gpu_sharing.planner.types import PlannerPolicy

GIB = 1024**3


def _gb(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def fits_alone(d, inventory, policy: PlannerPolicy) -> bool:
    """Whether one instance of ``d`` fits the node with nothing else on it, under ``policy``'s
    pins, reload setting and placement rules (problem.py's admits: the solvers' own test).
    Each partition index's admits is asked once per GPU and class (it answers for every
    layout), and the answer is known as soon as one GPU or hive holds tp ranks."""
    prob = build_problem(inventory, [replace(d, replicas=1)], policy, full=not policy.prefer_local_tp)
    for c in prob.classes:
        per_hive: dict[int, int] = {}
        for g in prob.gpus:
            per_layout = [0] * len(g.layouts)
            for k in range(max((lay.partitions for lay in g.layouts), default=0)):
                for o in prob.admits(g, k, c):
                    per_layout[o] += 1
            most = max(per_layout, default=0)
            if not prob.full and not prob.spans(g, c.demand_index):
                if most >= c.tp:
                    return True
                continue
            per_hive[g.hive] = per_hive.get(g.hive, 0) + (min(most, 1) if not prob.full else most)
            if per_hive[g.hive] >= c.tp:
                return True
    return False


def _unpinned(policy: PlannerPolicy) -> PlannerPolicy:
    return replace(policy, gpus=tuple(replace(p, compute_mode=None) for p in policy.gpus))


def _one_hive(inventory):
    first = inventory.gpus[0].hive_id if inventory.gpus else 0
    return replace(inventory, gpus=tuple(replace(g, hive_id=first) for g in inventory.gpus))


def _reload_text(inventory, policy: PlannerPolicy) -> str:
    pinned = {p.gpu: p.memory_mode for p in policy.gpus if p.memory_mode is not None}
    kept = ", ".join(f"gpu {g.index} {g.memory_mode.value}" + (f" (pinned {pinned[g.index].value})"
                                                               if pinned.get(g.index, g.memory_mode) != g.memory_mode
                                                               else "")
                     for g in inventory.gpus if not get_spec(g.model).memory_mode_fixed)
    return (f"memory modes stay as they are ({kept}) because node.allow_driver_reload is false, and no compute "
            "mode they allow holds it; set node.allow_driver_reload: true to let the planner change them")


def _hive_text(inventory, d, policy: PlannerPolicy) -> str:
    hives: dict[int, list[int]] = {}
    for g in inventory.gpus:
        if d.allowed_gpus is None or g.index in d.allowed_gpus:
            hives.setdefault(g.hive_id, []).append(g.index)
    sizes = ", ".join(f"hive {h}: GPUs {gs}" for h, gs in sorted(hives.items()))
    return (f"its ranks must share one XGMI hive and no hive has room for them ({sizes}); the node as a whole "
            "would hold it: add GPUs to a hive, or use quantization or a smaller max_model_len")


def _alone_reason(d, inventory, policy: PlannerPolicy, pinned) -> str | None:
    """The config constraint that keeps even a lone instance out, or None when one fits."""
    if fits_alone(d, inventory, policy):
        return None
    if policy.prefer_local_tp and fits_alone(d, inventory, replace(policy, prefer_local_tp=False)):
        return ("planner.prefer_local_tp rules out every placement of it (smallest tp that fits, one GPU for a "
                "model one GPU can hold); set it to false to place it")
    unpinned = _unpinned(policy)
    if pinned and fits_alone(d, inventory, unpinned):
        return _pinned_too_small(d, inventory, policy, pinned) or (
            f"GPUs {sorted(pinned)} are pinned to {sorted({m.value for m in pinned.values()})} by config, which "
            "leaves no set of partitions that holds its ranks; unpin them (compute_partition: auto) or use a "
            "larger tensor_parallel_size")
    if not policy.allow_driver_reload:
        for trial in (replace(policy, allow_driver_reload=True), replace(unpinned, allow_driver_reload=True)):
            if fits_alone(d, inventory, trial):
                text = _reload_text(inventory, policy)
                return text if trial.gpus == policy.gpus else f"{text}, and unpin GPUs {sorted(pinned)}"
    if len({g.hive_id for g in inventory.gpus}) > 1 and fits_alone(
            d, _one_hive(inventory), replace(unpinned, allow_driver_reload=True)):
        return _hive_text(inventory, d, policy)
    return ""


def unplaceable_reasons(items, inventory, specs, policy: PlannerPolicy, memory, packing: Packing) -> list[str]:
    """The reason for each of ``items``; the empty-node test runs once per model (it builds a
    problem per counterfactual: about 3 ms, times 30 unplaced replicas on a full node)."""
    alone: dict[str, str | None] = {}
    room = _NodeRoom.of(inventory, specs, policy, memory, packing) if items else None
    return [unplaceable_reason(i, inventory, specs, policy, memory, packing, alone, room) for i in items]


@dataclass(frozen=True)
class _NodeRoom:
    """What every reason of one plan says about the node: the largest partition its modes
    allow (after headroom) and the most free bytes the plan leaves on one partition."""

    largest_bytes: int
    largest_free_bytes: int

    @staticmethod
    def of(inventory, specs, policy: PlannerPolicy, memory, packing: Packing) -> "_NodeRoom":
        pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
        largest = 0
        for g in inventory.gpus:
            spec = specs[g.index]
            modes = ([pinned[g.index]] if g.index in pinned
                     else [c for c in spec.compute_modes() if spec.is_valid(c, memory[g.index])])
            largest = max(largest, max(int(spec.vram_per_partition_bytes(m) * (1 - policy.headroom_fraction))
                                       for m in modes))
        free = max((s.capacity_bytes - s.used_bytes for s in packing.slots.values()), default=0)
        return _NodeRoom(largest, max(0, free))


def unplaceable_reason(item: Item, inventory, specs, policy: PlannerPolicy, memory, packing: Packing,
                       alone_by_model: dict[str, str | None] | None = None, room: _NodeRoom | None = None) -> str:
    """``alone_by_model`` and ``room``: what one plan's reasons share (unplaceable_reasons)."""
    d = item.demand
    if not d.bytes_per_rank_by_tp:
        return f"{item.model}: no tensor-parallel degree is allowed (tp must divide {d.attention_heads} attention heads)"
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    room = room or _NodeRoom.of(inventory, specs, policy, memory, packing)
    largest, largest_free = room.largest_bytes, room.largest_free_bytes
    tp_best = smallest_fitting_tp(d, largest) or max(d.bytes_per_rank_by_tp)
    need = d.bytes_per_rank_by_tp[tp_best]
    parts = [f"{item.instance_id} needs {_gb(need)} per rank (tp={tp_best}, {_gb(need * tp_best)} in all)"]
    if d.allowed_gpus is not None:
        parts.append(f"restricted to GPUs {list(d.allowed_gpus)}")
    cache = {} if alone_by_model is None else alone_by_model
    if item.model not in cache:
        cache[item.model] = _alone_reason(d, inventory, policy, pinned)
    alone = cache[item.model]
    if alone:  # a config constraint binds: neither priority nor more GPUs would place it
        parts.append(alone)
        return "; ".join(parts)
    if alone == "":  # nothing in the config binds: it is too large for this node
        parts.append(f"the largest partition possible is {_gb(largest)} after headroom, and no set of partitions "
                     "of one hive holds its ranks")
        parts.append("use a larger tensor_parallel_size, quantization, or a smaller max_model_len/max_num_seqs")
        return "; ".join(parts)
    taken = sorted({a.item.model for a in packing.assignments.values() if a.item.weight > item.weight})
    if item.instance_id in packing.evicted_by:
        parts.append(f"displaced by higher-priority {packing.evicted_by[item.instance_id]}")
    elif taken:
        parts.append(f"higher-priority models took the room ({', '.join(taken[:5])}); raise its priority or add GPUs")
    else:
        parts.append("its room went to replicas of equal or lower priority that together place more priority "
                     "(the planner maximises the sum of priority+1 over placed replicas); raise its priority or "
                     "add GPUs")
    parts.append(f"largest free space left is {_gb(largest_free)}")
    if any(s.capacity_bytes - s.used_bytes >= need and not s.fits(need, d.cu_request) for s in packing.slots.values()):
        parts.append("where that space is, the partition's compute is taken (shares sum to at most 1; a share gets "
                     "floor(share x CUs) CUs, every tenant without one at least one CU)")
    return "; ".join(parts)


def _pinned_too_small(d, inventory, policy: PlannerPolicy, pinned) -> str:
    """The pin as the binding constraint: pinned GPUs whose partitions hold no rank of ``d`` at any tp."""
    hit = []
    for g in inventory.gpus:
        if g.index not in pinned or (d.allowed_gpus is not None and g.index not in d.allowed_gpus):
            continue
        spec = get_spec(g.model)
        cap = int(spec.vram_per_partition_bytes(pinned[g.index]) * (1 - policy.headroom_fraction))
        if not any(b <= cap for b in d.bytes_per_rank_by_tp.values()):
            hit.append((g.index, pinned[g.index].value, cap))
    if not hit:
        return ""
    smallest = min(d.bytes_per_rank_by_tp.values())
    return (f"GPUs {[h[0] for h in hit]} are pinned to {sorted({h[1] for h in hit})} by config: their "
            f"{_gb(max(h[2] for h in hit))} partitions hold no rank of it (at least {_gb(smallest)} per rank); "
            "unpin them (compute_partition: auto) or use a larger tensor_parallel_size")


def policy_warnings(inventory, policy: PlannerPolicy) -> tuple[str, ...]:
    """Every config choice the planner cannot honour, said once per plan."""
    out = []
    for p in sorted(policy.gpus, key=lambda p: p.gpu):
        try:
            g = inventory.gpu(p.gpu)
        except KeyError:
            out.append(f"gpu {p.gpu}: in the config but not on this node; its pins are ignored")
            continue
        spec = get_spec(g.model)
        if p.memory_mode is not None and p.memory_mode != g.memory_mode:
            if spec.memory_mode_fixed:
                out.append(f"gpu {p.gpu}: memory_partition {p.memory_mode.value} pinned, but {spec.name} fixes "
                           f"its memory mode at boot; staying in {g.memory_mode.value}")
            elif not policy.allow_driver_reload:
                out.append(f"gpu {p.gpu}: memory_partition {p.memory_mode.value} pinned, but "
                           f"node.allow_driver_reload is false; staying in {g.memory_mode.value}")
        memory = p.memory_mode if (p.memory_mode and policy.allow_driver_reload) else g.memory_mode
        if p.compute_mode is not None and not spec.is_valid(p.compute_mode, memory):
            out.append(f"gpu {p.gpu}: compute_partition {p.compute_mode.value} is not valid with "
                       f"{memory.value} on {spec.name} (valid: {spec.describe_valid_pairs()})")
    return tuple(out)


__all__ = ["fits_alone", "policy_warnings", "unplaceable_reason", "unplaceable_reasons"]
