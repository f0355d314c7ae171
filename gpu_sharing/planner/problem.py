"""The placement problem in numbers, shared by the exact solver and the decoder (pure).

Turns an Inventory, demands and a policy into what a solver needs: per GPU the layouts
it may take (valid compute+memory pairs, with every partition's total and usable bytes),
and per model the placement classes (model, tp) with bytes per rank and compute share.
Why a separate step: the CP-SAT model, the hint built from the greedy plan and the decoder
must agree on one numbering of options, slots and classes.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field, replace
from typing import Sequence

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from gpu_sharing.planner.types import ModelDemand, PlannerPolicy

SHARE_UNITS = 1000
"""Compute shares are counted in thousandths so that CP-SAT sums integers."""

_CU_EPS = 1e-9
"""isolation/cu_masks.py's tolerance, so that 0.5 x 152 is exactly 76 CUs."""


def cu_cost(share: float | int | None, cus: int) -> int:
    """CUs one rank takes from a partition of ``cus`` CUs, by the rule the launcher applies
    (isolation/cu_masks.resolve_cu_counts, lines 52-90): a compute share gets
    floor(share x CUs + 1e-9) and is refused when that is 0 (line 70); an int is a CU count
    (``limits.cu_count``: ModelDemand.cu_request), refused above the partition's CUs (line 76);
    a tenant without either splits what the others leave and needs at least one CU of it
    (lines 84-88). So a set of tenants is accepted iff the shares sum to at most 1 (line 58;
    counts are not shares) and the sum of this cost over the tenants is at most ``cus``
    (lines 53, 81, 85): see ``cus_fit``. 0 means "never here"."""
    if type(share) is int:
        return share if share <= cus else 0
    if share:
        return math.floor(share * cus + _CU_EPS)
    return 1


def cus_fit(cus: int, cus_used: int, share: float | int | None) -> bool:
    """Whether one more rank with ``share`` fits a partition of ``cus`` CUs whose tenants
    already take ``cus_used`` (the sum of their ``cu_cost``); the share sum is checked apart."""
    cost = cu_cost(share, cus)
    return cost >= 1 and cus_used + cost <= cus


def partition_cus(gpu, spec, mode: C) -> tuple[int, ...]:
    """CUs of each partition of ``gpu`` in compute ``mode``: what the inventory reports when the
    GPU is in that mode already (the launcher reads the same field), else the catalog's."""
    if mode == gpu.compute_mode and gpu.partitions:
        return tuple(p.cu_count or spec.cus_per_partition(mode) for p in sorted(gpu.partitions, key=lambda p: p.index))
    return (spec.cus_per_partition(mode),) * spec.partitions(mode)


@dataclass(frozen=True)
class Layout:
    """One (compute, memory) pair a GPU may take, with each partition's bytes."""

    compute: C
    memory: M
    total_bytes: tuple[int, ...]
    """Total VRAM of each partition in this layout."""
    capacity_bytes: tuple[int, ...]
    """Usable bytes of each partition after the configured headroom."""
    cus: tuple[int, ...] = ()
    """CUs of each partition (``cu_cost`` / ``cus_fit`` turn compute shares into them)."""

    @property
    def partitions(self) -> int:
        return len(self.total_bytes)


@dataclass(frozen=True)
class GpuChoices:
    gpu: int
    hive: int
    model: str
    layouts: tuple[Layout, ...]
    """Index 0 is the current layout when it is allowed (least disruption first)."""
    current: int | None
    """Index of the current layout in ``layouts``, or None when policy forbids it."""

    @property
    def slots(self) -> int:
        return max(lay.partitions for lay in self.layouts)


@dataclass(frozen=True)
class PlacementClass:
    """Replicas of one model at one tensor-parallel degree: interchangeable for the solver."""

    demand_index: int
    demand: ModelDemand
    tp: int
    bytes_per_rank: int
    share_units: int
    weight: int


@dataclass(frozen=True)
class Problem:
    """Placement rules (why: each keeps a plan cheap to run and the exact search small):
    1. tp is the smallest degree whose rank fits the partition (smallest_fitting_tp);
    2. a model that one GPU of the node can hold in some layout keeps all its ranks on one
       GPU, on every GPU (node-wide: on a mixed MI300X/MI325X node a model the MI325X holds
       alone does not span two MI300X either, issue 19);
    3. a model no single GPU can hold spans GPUs with one rank per GPU, each GPU in its
       coarsest layout (fewest partitions), all on one XGMI hive.
    Hence a model spans on every GPU or on none, and each (model, tp) class has one scope
    kind: mip.py's item groups and decode.py rely on it.
    """

    gpus: tuple[GpuChoices, ...]
    classes: tuple[PlacementClass, ...]
    demands: tuple[ModelDemand, ...]
    local_layouts: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict, compare=False)
    """(gpu, demand index) -> {layout index: tp} where one GPU in that layout holds an instance."""
    spanning: frozenset[tuple[int, int]] = frozenset()
    """(gpu, demand index) where no allowed layout of the GPU holds the model alone (rule 3)."""
    full: bool = False
    """The real feasible set instead of rules 1-3: any allowed tp whose rank fits, ranks of one
    instance on any distinct partitions of one hive (same GPU or several), any layout."""

    def spans(self, g: GpuChoices, demand_index: int) -> bool:
        """True when ``g`` can take ranks of this model only as part of a multi-GPU instance."""
        return (g.gpu, demand_index) in self.spanning

    def scope(self, g: GpuChoices, c: PlacementClass) -> tuple[str, int]:
        """Where one instance's ranks live: ("gpu", index) for local models, ("hive", id) for
        spanning ones; in the full feasible set every tp>1 instance may use the whole hive."""
        if self.full:
            return ("hive", g.hive) if c.tp > 1 else ("gpu", g.gpu)
        return ("hive", g.hive) if self.spans(g, c.demand_index) else ("gpu", g.gpu)

    def one_rank_per_gpu(self, scope: tuple[str, int]) -> bool:
        """Rule 3: a spanning instance puts one rank per GPU. In the full set only one rank per
        partition is required (each rank is one process on one device)."""
        return scope[0] == "hive" and not self.full

    def admits(self, g: GpuChoices, slot: int, c: PlacementClass) -> tuple[int, ...]:
        """Layout indices of ``g`` under which ``slot`` can hold a rank of ``c``."""
        d = c.demand
        if d.allowed_gpus is not None and g.gpu not in d.allowed_gpus:
            return ()
        if c.share_units > SHARE_UNITS:
            return ()
        if self.full:
            return tuple(o for o, lay in enumerate(g.layouts) if _slot_fits(lay, slot, c, free_tp=True))
        local = self.local_layouts.get((g.gpu, c.demand_index))
        if local:
            candidates = [o for o, tp in local.items() if tp == c.tp]
        elif self.spans(g, c.demand_index):
            candidates = [coarsest(g)]
        else:  # rule 2: another GPU holds the model alone, this one cannot: no ranks here
            return ()
        return tuple(o for o in sorted(candidates) if _slot_fits(g.layouts[o], slot, c))

    def rank_bound(self, g: GpuChoices, slot: int, c: PlacementClass, layouts: tuple[int, ...]) -> int:
        """Most ranks of ``c`` one slot can hold (memory, shares, replicas)."""
        most = max(min(g.layouts[i].capacity_bytes[slot] // max(1, c.bytes_per_rank),
                       g.layouts[i].cus[slot] // max(1, cu_cost(c.demand.cu_request, g.layouts[i].cus[slot])))
                   for i in layouts)
        if c.share_units:
            most = min(most, SHARE_UNITS // c.share_units)
        return min(most, c.demand.replicas)


def rank_fits(d: ModelDemand, tp: int, capacity_bytes: int, total_bytes: int, free_tp: bool = False) -> bool:
    """Whether a partition of this size may hold a tp-``tp`` rank of ``d`` (empty): the rank
    fits and the partition is large enough for the model; by rule 1 (unless ``free_tp``) tp is
    also the smallest that fits."""
    return (d.bytes_per_rank_by_tp[tp] <= capacity_bytes and total_bytes >= d.min_partition_bytes
            and (free_tp or smallest_fitting_tp(d, capacity_bytes) == tp))


def _slot_fits(lay: Layout, slot: int, c: PlacementClass, free_tp: bool = False) -> bool:
    return (slot < lay.partitions and rank_fits(c.demand, c.tp, lay.capacity_bytes[slot], lay.total_bytes[slot], free_tp)
            and cus_fit(lay.cus[slot], 0, c.demand.cu_request))


def coarsest(g: GpuChoices) -> int:
    """The layout with the fewest partitions (the current one on a tie)."""
    return min(range(len(g.layouts)), key=lambda o: (g.layouts[o].partitions, o))


def _local_layouts(g: GpuChoices, d: ModelDemand, memo: dict | None = None) -> dict[int, int]:
    """{layout index: tp} where one GPU of ``g`` in that layout holds an instance of ``d``
    (rule 1's tp on enough partitions). ``memo``: answers per layout's partition sizes, for
    one demand across GPUs that share them (a node has few GPU models)."""
    if d.allowed_gpus is not None and g.gpu not in d.allowed_gpus:
        return {}
    out = {}
    for o, lay in enumerate(g.layouts):
        key = (lay.capacity_bytes, lay.total_bytes, lay.cus)
        if memo is not None and key in memo:
            tp = memo[key]
        else:
            tp = _holding_tp(lay, d)
            if memo is not None:
                memo[key] = tp
        if tp is not None:
            out[o] = tp
    return out


def _holding_tp(lay: Layout, d: ModelDemand) -> int | None:
    """The smallest tp whose ranks fit ``tp`` partitions of ``lay`` under rule 1, or None."""
    sizes: dict[tuple[int, int, int], int] = {}  # (capacity, total, CUs) -> partitions of that size
    for size in zip(lay.capacity_bytes, lay.total_bytes, lay.cus):
        sizes[size] = sizes.get(size, 0) + 1
    for tp in sorted(d.bytes_per_rank_by_tp):
        if sum(n for (cap, total, cus), n in sizes.items()
               if rank_fits(d, tp, cap, total) and cus_fit(cus, 0, d.cu_request)) >= tp:
            return tp
    return None


def smallest_fitting_tp(d: ModelDemand, capacity_bytes: int) -> int | None:
    """The tensor-parallel degree an instance of ``d`` takes on partitions of this size.

    Tensor parallelism only where a model needs more than one partition: each extra rank
    costs another runtime overhead and all-reduce traffic, so a model that fits a partition
    runs there with tp=1 and a larger degree is used only when smaller ones do not fit.
    """
    for tp in sorted(d.bytes_per_rank_by_tp):
        if d.bytes_per_rank_by_tp[tp] <= capacity_bytes:
            return tp
    return None


def layouts_for(inventory: Inventory, policy: PlannerPolicy) -> tuple[GpuChoices, ...]:
    """Every GPU's allowed layouts: pinned modes are kept, NPS changes only with a driver reload.
    Remembered for the last few (inventory, pins, reload, headroom): one plan() builds its
    problem several times (the first pass, the full set, one per unplaceable reason), and the
    answer is a frozen value of those inputs only."""
    try:
        return _layouts_cached(inventory, policy.gpus, policy.allow_driver_reload, policy.headroom_fraction)
    except TypeError:  # an inventory or pin built with unhashable parts: compute it afresh
        return _layouts(inventory, policy.gpus, policy.allow_driver_reload, policy.headroom_fraction)


def _layouts(inventory: Inventory, pins, allow_driver_reload: bool, headroom_fraction: float) -> tuple[GpuChoices, ...]:
    pinned_c = {p.gpu: p.compute_mode for p in pins if p.compute_mode is not None}
    pinned_m = {p.gpu: p.memory_mode for p in pins if p.memory_mode is not None}
    out = []
    for g in sorted(inventory.gpus, key=lambda g: g.index):
        spec = get_spec(g.model)
        computes = [pinned_c[g.index]] if g.index in pinned_c else spec.compute_modes()
        if spec.memory_mode_fixed or not allow_driver_reload:
            memories = [g.memory_mode]
        elif g.index in pinned_m:
            memories = [pinned_m[g.index]]
        else:
            memories = spec.memory_modes()
        if g.memory_caps:  # what the firmware offers narrows the catalog ("supported combinations vary by
            memories = [m for m in memories if m in g.memory_caps or m == g.memory_mode]  # GPU model and firmware")
        pairs = [(c, m) for c in computes for m in memories if spec.is_valid(c, m)]
        if not pairs:  # the config asks for an invalid pair: keep what is there (validation reports it)
            pairs = [(g.compute_mode, g.memory_mode)]
        pairs.sort(key=lambda p: (p != (g.compute_mode, g.memory_mode), p[1] != g.memory_mode,
                                  spec.partitions(p[0]), p[1].count))
        layouts = []
        for c, m in pairs:
            if (c, m) == (g.compute_mode, g.memory_mode) and g.partitions:
                totals = tuple(p.vram_total_bytes for p in sorted(g.partitions, key=lambda p: p.index))
            else:
                totals = (spec.vram_per_partition_bytes(c),) * spec.partitions(c)
            caps = tuple(int(t * (1.0 - headroom_fraction)) for t in totals)
            layouts.append(Layout(c, m, totals, caps, partition_cus(g, spec, c)))
        current = 0 if pairs[0] == (g.compute_mode, g.memory_mode) else None
        out.append(GpuChoices(g.index, g.hive_id, spec.name, tuple(layouts), current))
    return tuple(out)


_layouts_cached = lru_cache(maxsize=16)(_layouts)


def placement_classes(demands: Sequence[ModelDemand]) -> list[PlacementClass]:
    """Every (model, tp) a demand allows, in demand then tp order (the numbering solvers share)."""
    classes = []
    for i, d in enumerate(demands):
        if d.replicas <= 0:
            continue
        share = int(math.ceil((d.compute_share or 0.0) * SHARE_UNITS - 1e-9))
        for tp in sorted(d.bytes_per_rank_by_tp):
            classes.append(PlacementClass(i, d, tp, int(d.bytes_per_rank_by_tp[tp]), share, d.priority + 1))
    return classes


def build_problem(inventory: Inventory, demands: Sequence[ModelDemand], policy: PlannerPolicy,
                  full: bool = False) -> Problem:
    """The problem under rules 1-3 (the fast first pass), or over the real feasible set (``full``)."""
    classes = placement_classes(demands)
    gpus = layouts_for(inventory, policy)
    if full:  # no rules 2 and 3: which GPU holds a model alone does not matter
        return Problem(gpus, tuple(classes), tuple(demands), {}, frozenset(), full=True)
    memos: dict[int, dict] = {}
    local = {(g.gpu, i): _local_layouts(g, d, memos.setdefault(i, {})) for g in gpus for i, d in enumerate(demands)}
    held = {i for (_g, i), layouts in local.items() if layouts}  # rule 2 is node-wide (issue 19: spans on
    spanning = frozenset((g.gpu, i) for g in gpus for i in range(len(demands)) if i not in held)  # GPU or none)
    return Problem(gpus, tuple(classes), tuple(demands), local, spanning)


def narrow(prob: Problem, allowed: dict[int, tuple[int, ...]]) -> Problem:
    """The same problem with some GPUs limited to some of their layouts (indices renumbered
    in the order given). Which models span stays as in the full problem."""
    gpus, local = [], {}
    for g in prob.gpus:
        keep = allowed.get(g.gpu, tuple(range(len(g.layouts))))
        index = {o: i for i, o in enumerate(keep)}
        gpus.append(replace(g, layouts=tuple(g.layouts[o] for o in keep), current=index.get(g.current)))
        for di in range(len(prob.demands)):
            layouts = prob.local_layouts.get((g.gpu, di), {})
            local[g.gpu, di] = {index[o]: tp for o, tp in layouts.items() if o in index}
    return replace(prob, gpus=tuple(gpus), local_layouts=local)


def total_weight(demands: Sequence[ModelDemand]) -> int:
    """Placed priority if every replica were placed: the trivial upper bound."""
    return sum((d.priority + 1) * d.replicas for d in demands)
