"""Reasons a person can act on, for replicas the planner could not place."""

from __future__ import annotations

from gpu_sharing.hardware.catalog import get_spec
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
    blocked = _pinned_too_small(d, inventory, specs, policy, pinned)
    if blocked:
        parts.append(blocked)
    taken = sorted({a.item.model for a in packing.assignments.values() if a.item.weight > item.weight})
    if blocked:
        pass  # the pin binds: neither priority nor more GPUs would place it
    elif item.instance_id in packing.evicted_by:
        parts.append(f"displaced by higher-priority {packing.evicted_by[item.instance_id]}")
    elif taken:
        parts.append(f"higher-priority models took the room ({', '.join(taken[:5])}); raise its priority or add GPUs")
    else:
        parts.append("its room went to lower-priority replicas that together place more priority (the planner "
                     "maximises the sum of priority+1 over placed replicas); raise its priority or add GPUs")
    parts.append(f"largest free space left is {_gb(largest_free)}")
    return "; ".join(parts)


def _pinned_too_small(d, inventory, specs, policy: PlannerPolicy, pinned) -> str:
    """The pin as the binding constraint: pinned GPUs whose partitions hold no rank of ``d`` at any tp."""
    hit = []
    for g in inventory.gpus:
        if g.index not in pinned or (d.allowed_gpus is not None and g.index not in d.allowed_gpus):
            continue
        spec = specs[g.index]
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


__all__ = ["policy_warnings", "unplaceable_reason"]
