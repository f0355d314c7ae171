"""CU masks for instances that share a partition: newcomers take free CUs; rebalances restart neighbours.

Why from the running masks: the planner only says which instances share a partition; the CUs a
running instance holds are the ones in its HSA_CU_MASK, fixed when it started (a process cannot be
given a new mask without a restart). Recomputing every co-tenant's mask and handing it only to the
newcomer (what this code did before) gave the newcomer CUs that a neighbour still uses. So:

1. the whole set of shares on the partition must be possible (``resolve_cu_counts`` raises otherwise);
2. a newcomer gets its count from the CUs that no running neighbour's mask holds (a running
   neighbour without a mask holds every CU), XCC-spread (``assign_free_cu_sets``);
3. when the free CUs do not suffice and a newcomer has a compute share or CU count of its own, the
   partition is rebalanced (a newcomer without one shares the CUs unmasked: admitting a small model
   never restarts a running neighbour): every member gets a fresh mask
   (``ResourceIsolator.cu_masks``), and each running neighbour whose mask changes is named in
   ``CuAssignment.restarts`` with the reason; the applier restarts it with its new mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from gpu_sharing.config.schema import ComputeLimitsSettings, Config, ModelSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import Inventory, PartitionRef
from gpu_sharing.isolation import ComputeLimits, ResourceIsolator
from gpu_sharing.isolation.cu_masks import assign_free_cu_sets, format_hsa_cu_mask, mask_cus, resolve_cu_counts
from gpu_sharing.planner.types import Placement, Plan


@dataclass(frozen=True)
class CuAssignment:
    masks: Mapping[str, str] = field(default_factory=dict)
    """HSA_CU_MASK per instance to start (or restart); absent: no mask (the whole partition)."""
    restarts: tuple[str, ...] = ()
    """Running instances that must restart with ``masks`` (their partition is rebalanced)."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """Why each of ``restarts`` restarts."""


def cu_masks_for(plan: Plan, inventory: Inventory, config: Config,
                 running: Mapping[str, str | None] | None = None) -> CuAssignment:
    """Masks for the instances ``plan`` starts on shared partitions; ``running``: instance -> its HSA_CU_MASK
    (None: runs without one). Running instances absent from ``running`` are taken to hold every CU."""
    running = running or {}
    isolator = ResourceIsolator(launcher=config.node.launcher)
    models = {m.name: m for m in config.models}
    by_partition: dict[PartitionRef, list[Placement]] = {}
    for p in plan.placements:
        for ref in p.partitions:
            by_partition.setdefault(ref, []).append(p)
    starting = {p.instance_id for p in plan.to_start}
    masks: dict[str, str] = {}
    restarts: dict[str, str] = {}
    for ref, group in sorted(by_partition.items()):
        newcomers = [p for p in group if p.instance_id in starting]
        if len(group) < 2 or not newcomers:
            continue
        part = inventory.partition(ref)
        members = {p.instance_id: _limits(p, models.get(p.model)) for p in group}
        tp = {p.instance_id: p.tp for p in group}
        try:
            counts = resolve_cu_counts(cu_count=part.cu_count, requests={i: m.cu_request for i, m in members.items()})
        except UserError as e:
            raise UserError(f"partition {ref} ({part.cu_count} CUs, {part.xcc_count} XCCs): {e}") from e
        neighbours = [p for p in group if p.instance_id not in starting]
        taken: set[int] = set()
        for p in neighbours:
            mask = running.get(p.instance_id)
            taken |= mask_cus(mask) if mask else set(range(part.cu_count))
        try:
            sets = assign_free_cu_sets(cu_count=part.cu_count, xcc_count=part.xcc_count, taken=frozenset(taken),
                                       counts={p.instance_id: counts[p.instance_id] for p in newcomers})
        except UserError as short:
            if all(members[p.instance_id].cu_request is None for p in newcomers):
                continue  # no share of its own to claim: the newcomer shares the CUs, no running neighbour restarts
            fresh = isolator.cu_masks(part, members, tp)
            for p in newcomers:
                if p.instance_id in fresh and p.instance_id not in masks:
                    masks[p.instance_id] = fresh[p.instance_id]
            names = ", ".join(p.instance_id for p in newcomers)
            for p in neighbours:
                if fresh.get(p.instance_id) != running.get(p.instance_id):
                    restarts[p.instance_id] = f"CUs of partition {ref} rebalanced for {names} ({short})"
                    if p.instance_id in fresh:
                        masks[p.instance_id] = fresh[p.instance_id]
            continue
        for iid, cus in sets.items():
            if len(cus) < part.cu_count and iid not in masks:
                masks[iid] = format_hsa_cu_mask(cus, tp.get(iid, 1))
    return CuAssignment(masks, tuple(sorted(restarts)), restarts)


def _limits(p: Placement, model: ModelSettings | None) -> ComputeLimits:
    settings = model.limits if model is not None else ComputeLimitsSettings()
    if p.compute_share is not None and settings.compute_share is None and settings.cu_count is None:
        settings = settings.model_copy(update={"compute_share": p.compute_share})
    return ComputeLimits.from_settings(settings)
