"""Packing replicas into the partitions of a fixed set of GPU modes (pure, deterministic).

Three phases, so that what runs is disturbed only when it must be:
1. keep: running instances whose fingerprint still matches and whose GPU keeps its
   mode are reserved where they are; an instance whose options changed restarts on the
   partitions it used when it still fits there (so its room is not taken by others);
2. place: remaining replicas, highest priority first (then largest first), go to the
   tightest partitions that fit (best fit), preferring GPUs that hold no replica of the
   same model (failure domains) and the smallest tensor-parallel degree;
3. evict: a replica that still does not fit may displace lower-priority instances
   (lowest priority first); the displaced ones are re-placed elsewhere when possible.
A partition is never over-committed: per-rank bytes plus the headroom fit its VRAM, compute
shares on one partition sum to at most 1, and its CUs cover every tenant (problem.cus_fit:
floor(share x CUs) per share, at least one CU per tenant without a share).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from gpu_sharing.hardware.catalog import GpuModelSpec
from gpu_sharing.hardware.inventory import Inventory, PartitionRef
from gpu_sharing.hardware.modes import ComputePartitionMode
from gpu_sharing.planner.problem import Problem, coarsest, cu_cost, partition_cus, rank_fits
from gpu_sharing.planner.types import ModelDemand, PlannerPolicy, PreemptPolicy, RunningInstance


@dataclass
class Slot:
    ref: PartitionRef
    hive: int
    capacity_bytes: int
    total_bytes: int
    used_bytes: int = 0
    share_used: float = 0.0
    occupants: list[str] = field(default_factory=list)
    cus: int = 0
    """The partition's CUs."""
    cus_used: int = 0
    """Sum of problem.cu_cost over the ranks placed here."""

    def fits(self, nbytes: int, share: float | int | None) -> bool:
        """``share``: the demand's cu_request (a share, a CU count or None)."""
        if self.used_bytes + nbytes > self.capacity_bytes:
            return False
        # problem.cus_fit written inline (this runs in the greedy's inner loop, ~10^5 calls a plan):
        # one CU for a tenant without a share, floor(share x CUs + 1e-9) >= 1 for a share
        if not share:
            return self.cus_used < self.cus
        if type(share) is int:  # a CU count (limits.cu_count): CUs only, no share
            return share <= self.cus - self.cus_used
        cost = int(share * self.cus + 1e-9)
        return self.share_used + share <= 1.0 + 1e-9 and 1 <= cost <= self.cus - self.cus_used

    def empty(self) -> "Slot":
        """An empty copy: same partition, bytes and CUs."""
        return Slot(self.ref, self.hive, self.capacity_bytes, self.total_bytes, cus=self.cus)

    def within_limits(self) -> bool:
        """Bytes, compute shares and CUs (problem.cu_cost's sum) within the partition's: what a
        set of placements made without ``fits`` (decoded counts) is checked against."""
        return self.used_bytes <= self.capacity_bytes and self.share_used <= 1.0 + 1e-9 and self.cus_used <= self.cus


@dataclass(frozen=True)
class Item:
    instance_id: str
    model: str
    replica: int
    weight: int
    demand: ModelDemand


@dataclass
class Assignment:
    item: Item
    tp: int
    refs: tuple[PartitionRef, ...]
    bytes_per_rank: int


@dataclass
class Packing:
    assignments: dict[str, Assignment]
    unplaced: list[Item]
    evicted_by: dict[str, str]
    slots: dict[PartitionRef, Slot]

    def objective(self, disruption: int) -> tuple[int, int, int, int]:
        weight = sum(a.item.weight for a in self.assignments.values())
        used = sum(1 for s in self.slots.values() if s.occupants)
        return (weight, len(self.assignments), -disruption, -used)


def build_slots(inventory: Inventory, modes: dict[int, ComputePartitionMode], specs: dict[int, GpuModelSpec],
                policy: PlannerPolicy) -> dict[PartitionRef, Slot]:
    slots: dict[PartitionRef, Slot] = {}
    for gpu in inventory.gpus:
        spec = specs[gpu.index]
        mode = modes[gpu.index]
        if mode == gpu.compute_mode and gpu.partitions:
            totals = [(p.index, p.vram_total_bytes) for p in sorted(gpu.partitions, key=lambda p: p.index)]
        else:
            totals = [(k, spec.vram_per_partition_bytes(mode)) for k in range(spec.partitions(mode))]
        for (k, total), cus in zip(totals, partition_cus(gpu, spec, mode)):
            ref = PartitionRef(gpu.index, k)
            slots[ref] = Slot(ref, gpu.hive_id, int(total * (1.0 - policy.headroom_fraction)), total, cus=cus)
    return slots


def items_for(demands: Sequence[ModelDemand]) -> list[Item]:
    out = []
    for d in demands:
        for r in range(d.replicas):
            out.append(Item(d.instance_id(r), d.name, r, d.priority + 1, d))
    return out


def _order_key(item: Item) -> tuple:
    smallest = min(item.demand.bytes_per_rank_by_tp.values()) if item.demand.bytes_per_rank_by_tp else 0
    return (-item.weight, -smallest, item.model, item.replica)


def _size_key(item: Item) -> tuple:
    """First-fit-decreasing order: largest first, priority breaks ties."""
    smallest = min(item.demand.bytes_per_rank_by_tp.values()) if item.demand.bytes_per_rank_by_tp else 0
    return (-smallest, -item.weight, item.model, item.replica)


ORDERS = {"priority": _order_key, "size": _size_key}


def _occupy(slots: dict[PartitionRef, Slot], a: Assignment) -> None:
    for ref in a.refs:
        s = slots[ref]
        s.used_bytes += a.bytes_per_rank
        s.share_used += a.item.demand.compute_share or 0.0
        s.cus_used += cu_cost(a.item.demand.cu_request, s.cus)
        s.occupants.append(a.item.instance_id)


def occupy_all(slots: dict[PartitionRef, Slot], assignments: dict[str, Assignment]) -> dict[PartitionRef, Slot]:
    """``slots`` with every assignment occupied, in instance order (the same sums in any run); returned for chaining."""
    for a in sorted(assignments.values(), key=lambda a: a.item.instance_id):
        _occupy(slots, a)
    return slots


def _release(slots: dict[PartitionRef, Slot], a: Assignment) -> None:
    for ref in a.refs:
        s = slots[ref]
        s.used_bytes -= a.bytes_per_rank
        s.share_used -= a.item.demand.compute_share or 0.0
        s.cus_used -= cu_cost(a.item.demand.cu_request, s.cus)
        s.occupants.remove(a.item.instance_id)


@dataclass(frozen=True)
class SpanRules:
    """Where a model must span GPUs (problem.py rules 2 and 3), for the greedy to obey."""

    spanning: frozenset[tuple[str, int]] = frozenset()
    """(model, gpu) pairs where the model cannot sit on one GPU and spans GPUs instead."""
    coarse_partitions: Mapping[int, int] = field(default_factory=dict)
    """gpu -> partitions of its coarsest allowed layout (where spanning ranks may go)."""


def span_rules(prob: Problem) -> SpanRules:
    """The rules of ``prob`` in the greedy's terms (model names, partition counts)."""
    return SpanRules(frozenset((prob.demands[di].name, g) for g, di in prob.spanning),
                     {g.gpu: g.layouts[coarsest(g)].partitions for g in prob.gpus})


def fitting_slots(slots: dict[PartitionRef, Slot], d: ModelDemand, tp: int, free_tp: bool = False) -> list[Slot]:
    """Partitions with room for one more tp-``tp`` rank of ``d`` (bytes, share, GPUs allowed)."""
    need = d.bytes_per_rank_by_tp[tp]
    share, allowed = d.cu_request, d.allowed_gpus
    sized: dict[tuple[int, int], bool] = {}  # rank_fits per partition size: a node has few sizes
    out = []
    for s in slots.values():
        if (allowed is not None and s.ref.gpu not in allowed) or not s.fits(need, share):
            continue
        size = (s.capacity_bytes, s.total_bytes)
        ok = sized.get(size)
        if ok is None:
            ok = sized[size] = rank_fits(d, tp, s.capacity_bytes, s.total_bytes, free_tp)
        if ok:
            out.append(s)
    return out


def _choose(slots: dict[PartitionRef, Slot], item: Item, placed_gpus: dict[str, set[int]],
            policy: PlannerPolicy, rules: SpanRules) -> Assignment | None:
    d = item.demand
    siblings = placed_gpus.get(item.model, set())
    for tp in sorted(d.bytes_per_rank_by_tp):
        need = d.bytes_per_rank_by_tp[tp]
        cands = fitting_slots(slots, d, tp)
        if len(cands) < tp:
            continue
        by_gpu: dict[int, list[Slot]] = {}
        for s in cands:
            by_gpu.setdefault(s.ref.gpu, []).append(s)
        options: list[tuple[tuple, tuple[PartitionRef, ...]]] = []
        for gpu, group in by_gpu.items():
            if (item.model, gpu) not in rules.spanning and len(group) >= tp:
                chosen = sorted(group, key=lambda s: (s.capacity_bytes - s.used_bytes, s.ref))[:tp]
                slack = sum(s.capacity_bytes - s.used_bytes - need for s in chosen)
                spread = 1 if (policy.spread_replicas and gpu in siblings) else 0
                options.append(((0, spread, slack, gpu), tuple(s.ref for s in chosen)))
        if not options and tp > 1:  # one rank per GPU, on GPUs in their coarsest layout, one hive
            per_gpu_count: dict[int, int] = {}
            for ref in slots:
                per_gpu_count[ref.gpu] = per_gpu_count.get(ref.gpu, 0) + 1
            by_hive: dict[int, list[Slot]] = {}
            for gpu, group in sorted(by_gpu.items()):
                if (item.model, gpu) in rules.spanning and per_gpu_count[gpu] == rules.coarse_partitions.get(gpu):
                    best = min(group, key=lambda s: (s.capacity_bytes - s.used_bytes, s.ref))
                    by_hive.setdefault(best.hive, []).append(best)
            for hive, group in sorted(by_hive.items()):
                if len(group) >= tp:
                    chosen = sorted(group, key=lambda s: (s.capacity_bytes - s.used_bytes, s.ref))[:tp]
                    slack = sum(s.capacity_bytes - s.used_bytes - need for s in chosen)
                    options.append(((1, 0, slack, hive), tuple(sorted(s.ref for s in chosen))))
        if options:
            options.sort()
            return Assignment(item, tp, options[0][1], need)
    return None


def _in_place(slots: dict[PartitionRef, Slot], item: Item, run: RunningInstance, rules: SpanRules) -> Assignment | None:
    """The new version of a running instance on the partitions the old one used, if the rules allow."""
    d, tp = item.demand, len(run.partitions)
    need = d.bytes_per_rank_by_tp.get(tp)
    gpus = {r.gpu for r in run.partitions}
    spanning = [(item.model, g) in rules.spanning for g in gpus]
    if need is None or (len(gpus) > 1 and not all(spanning)) or (len(gpus) == 1 and tp > 1 and any(spanning)):
        return None
    if d.allowed_gpus is not None and not gpus <= set(d.allowed_gpus):
        return None
    for r in run.partitions:
        s = slots[r]
        if not (rank_fits(d, tp, s.capacity_bytes, s.total_bytes) and s.fits(need, d.cu_request)):
            return None
    return Assignment(item, tp, tuple(run.partitions), need)


def pack(slots: dict[PartitionRef, Slot], items: list[Item], keep: dict[str, RunningInstance],
         policy: PlannerPolicy, order: str = "priority", rules: SpanRules = SpanRules(),
         restart: dict[str, RunningInstance] | None = None) -> Packing:
    """Place ``items``; ``keep`` maps instance ids to running instances that may stay put,
    ``restart`` those that must restart (changed options) and may do so in place."""
    restart = restart or {}
    assignments: dict[str, Assignment] = {}
    placed_gpus: dict[str, set[int]] = {}
    by_id = {i.instance_id: i for i in items}

    def note(a: Assignment) -> None:
        assignments[a.item.instance_id] = a
        placed_gpus.setdefault(a.item.model, set()).update(r.gpu for r in a.refs)

    for iid, run in sorted(keep.items()):  # phase 1: keep
        item = by_id.get(iid)
        if item is None or not all(r in slots for r in run.partitions):
            continue
        a = Assignment(item, len(run.partitions), tuple(run.partitions), run.memory_bytes_per_rank)
        if all(slots[r].fits(a.bytes_per_rank, item.demand.cu_request) for r in a.refs):
            _occupy(slots, a)
            note(a)
    for iid, run in sorted(restart.items()):  # phase 1b: a changed instance restarts where it ran
        item = by_id.get(iid)
        if item is None or iid in assignments or not all(r in slots for r in run.partitions):
            continue
        a = _in_place(slots, item, run, rules)
        if a is not None:
            _occupy(slots, a)
            note(a)
    queue = sorted((i for i in items if i.instance_id not in assignments), key=ORDERS[order])
    unplaced: list[Item] = []
    evicted_by: dict[str, str] = {}
    for item in queue:  # phase 2: place
        a = _choose(slots, item, placed_gpus, policy, rules)
        if a:
            _occupy(slots, a)
            note(a)
        else:
            unplaced.append(item)
    still: list[Item] = [] if policy.preempt != PreemptPolicy.NEVER else list(unplaced)
    for item in sorted(unplaced if policy.preempt != PreemptPolicy.NEVER else [], key=_order_key):  # phase 3: evict
        victims = sorted((a for a in assignments.values() if a.item.weight < item.weight),
                         key=lambda a: (a.item.weight, -a.bytes_per_rank, a.item.instance_id))
        removed: list[Assignment] = []
        placed = None
        for v in victims:
            _release(slots, v)
            removed.append(v)
            placed = _choose(slots, item, placed_gpus, policy, rules)
            if placed:
                break
        if placed is None:
            for v in removed:
                _occupy(slots, v)
            still.append(item)
            continue
        _occupy(slots, placed)
        for v in removed:
            del assignments[v.item.instance_id]
        note(placed)
        for v in removed:  # re-place the displaced where they still fit
            again = _choose(slots, v.item, placed_gpus, policy, rules)
            if again:
                _occupy(slots, again)
                note(again)
            else:
                evicted_by[v.item.instance_id] = item.instance_id
                still.append(v.item)
    return Packing(assignments, still, evicted_by, slots)
