"""Reasons a person can act on, for replicas the planner could not place."""

from __future__ import annotations

from gpu_sharing.planner.packing import Item, Packing
from gpu_sharing.planner.problem import smallest_fitting_tp
from gpu_sharing.planner.types import PlannerPolicy

GIB = 1024**3


def _gb(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def unplaceable_reason(item: Item, inventory, specs, policy: PlannerPolicy, memory, packing: Packing) -> str:
    d = item.demand
    if not d.bytes_per_rank_by_tp:
        return f"{item.model}: no tensor-parallel degree is allowed (tp must divide {d.attention_heads} attention heads)"
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    largest, largest_free = 0, 0
    for g in inventory.gpus:
        spec = specs[g.index]
        modes = [pinned[g.index]] if g.index in pinned else [c for c in spec.compute_modes() if spec.is_valid(c, memory[g.index])]
        largest = max(largest, max(int(spec.vram_per_partition_bytes(m) * (1 - policy.headroom_fraction)) for m in modes))
    for s in packing.slots.values():
        largest_free = max(largest_free, s.capacity_bytes - s.used_bytes)
    tp_best = smallest_fitting_tp(d, largest) or max(d.bytes_per_rank_by_tp)
    need = d.bytes_per_rank_by_tp[tp_best]
    parts = [f"{item.instance_id} needs {_gb(need)} per rank (tp={tp_best}, {_gb(need * tp_best)} in all)"]
    if d.allowed_gpus is not None:
        parts.append(f"restricted to GPUs {list(d.allowed_gpus)}")
    if need > largest:
        parts.append(f"the largest partition possible is {_gb(largest)} after headroom")
        if pinned:
            parts.append(f"GPUs {sorted(pinned)} are pinned to {sorted({m.value for m in pinned.values()})} by config")
        if not policy.allow_driver_reload:
            parts.append("memory modes are fixed (node.allow_driver_reload is false)")
        parts.append("use a larger tensor_parallel_size, quantization, or a smaller max_model_len/max_num_seqs")
        return "; ".join(parts)
    taken = sorted({a.item.model for a in packing.assignments.values() if a.item.weight > item.weight})
    if item.instance_id in packing.evicted_by:
        parts.append(f"displaced by higher-priority {packing.evicted_by[item.instance_id]}")
    elif taken:
        parts.append(f"higher-priority models took the room ({', '.join(taken[:5])}); raise its priority or add GPUs")
    else:
        parts.append("its room went to lower-priority replicas that together place more priority (the planner "
                     "maximises the sum of priority+1 over placed replicas); raise its priority or add GPUs")
    parts.append(f"largest free space left is {_gb(largest_free)}")
    return "; ".join(parts)


__all__ = ["unplaceable_reason"]
