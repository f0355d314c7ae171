"""Partition patterns: the aggregated view the pattern master (pattern_master.py) works on (pure).

Why: the layout search packs the knapsack's choice greedily, and on fragmented partitions
(CPX: 64 partitions of 24-32 GiB) or with compute shares the greedy leaves 0.3-3.4% of the
optimum unplaced (docs/planner-benchmark.md). What a partition holds is a *pattern*: how many
ranks of each (model, tp) class it carries, within its usable bytes, compute shares summing
to at most 1 and its CUs (the launcher's rule, problem.cu_cost). Partitions with the same
hive, size, CUs and GPU pins are interchangeable
(a *type*), so a plan is, up to naming, how many partitions of each type take each pattern
plus how many instances of each class each hive runs. Counting patterns instead of
assigning ranks keeps the model small whatever the number of GPUs.

Here: the partition types and GPU kinds of a node over each GPU's candidate modes (a kind's
GPUs are interchangeable; a mode gives it so many partitions of each type; the pricing step
of column generation, the best pattern at given prices, is pricing.py), and the way back
from counts to named instances on concrete partitions, with the planner's own checks
(``valid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.fill import fill_free_room
from gpu_sharing.hardware.modes import ComputePartitionMode
from gpu_sharing.planner.packing import Assignment, Packing, Slot, build_slots, items_for, occupy_all
from gpu_sharing.planner.problem import SHARE_UNITS, PlacementClass, cu_cost, cus_fit, placement_classes, rank_fits
from gpu_sharing.planner.types import ModelDemand, PlannerPolicy

Pattern = tuple[tuple[int, int], ...]
"""((class index, ranks), ...) sorted by class: what one partition holds."""


@dataclass(frozen=True)
class PartType:
    """Interchangeable partitions: same hive, usable and total bytes, and GPU pins."""

    hive: int
    capacity_bytes: int
    total_bytes: int
    barred: tuple[int, ...]
    """Demand indices whose GPU pins exclude these partitions."""
    cus: int
    """CUs of each partition (problem.cu_cost turns compute shares into them)."""
    admits: tuple[int, ...]
    """Class indices whose rank fits an empty partition of this type."""


@dataclass(frozen=True)
class Kind:
    """Interchangeable GPUs (same hive, pins and candidate layouts) and, per candidate compute
    mode, how many partitions of each type it gives."""

    gpus: tuple[int, ...]
    modes: tuple[ComputePartitionMode, ...]
    parts: tuple[tuple[tuple[int, int], ...], ...]
    """Per mode: ((type, partitions), ...)."""


@dataclass(frozen=True)
class Space:
    demands: tuple[ModelDemand, ...]
    classes: tuple[PlacementClass, ...]
    types: tuple[PartType, ...]
    kinds: tuple[Kind, ...]
    ranks_memo: dict = field(default_factory=dict, compare=False, repr=False)
    """most_ranks per (class, type), filled as asked: the pricing and the completion ask the
    same few thousand times a plan (measured: 4-5% of the pattern step)."""

    def most(self, t: int) -> int:
        """Partitions of type t the node can have at once."""
        return sum(len(k.gpus) * max((n for parts in k.parts for tt, n in parts if tt == t), default=0)
                   for k in self.kinds)


def _key(demands, pinned: list[int], s: Slot) -> tuple:
    return (s.hive, s.capacity_bytes, s.total_bytes,
            tuple(i for i in pinned if s.ref.gpu not in demands[i].allowed_gpus), s.cus)


def build_space(inventory, demands, policy: PlannerPolicy, specs, candidates: dict[int, list]) -> Space:
    """The classes of ``demands``, and the partition types and GPU kinds of the node when each
    GPU takes one of its ``candidates`` compute modes (partitions as packing.build_slots
    makes them: the current ones at the current mode)."""
    classes = [c for c in placement_classes(demands) if c.share_units <= SHARE_UNITS]  # more than a whole GPU: never
    pinned = [i for i, d in enumerate(demands) if d.allowed_gpus is not None]
    gpus = sorted(candidates)
    by_mode = {m: build_slots(inventory, {g: (m if m in candidates[g] else candidates[g][0]) for g in gpus}, specs,
                              policy) for m in sorted({m for g in gpus for m in candidates[g]}, key=_rank)}
    keys: dict[tuple, int] = {}
    kinds: dict[tuple, list[int]] = {}
    for g in gpus:
        sig = []
        for m in sorted(candidates[g], key=_rank):
            counts: dict[int, int] = {}
            for ref, s in sorted(by_mode[m].items()):
                if ref.gpu == g:
                    t = keys.setdefault(_key(demands, pinned, s), len(keys))
                    counts[t] = counts.get(t, 0) + 1
            sig.append((m, tuple(sorted(counts.items()))))
        kinds.setdefault((inventory.gpu(g).hive_id, tuple(sig)), []).append(g)
    types = []
    for (hive, cap, total, barred, cus) in sorted(keys, key=keys.get):
        admits = tuple(ci for ci, c in enumerate(classes) if c.demand_index not in barred
                       and rank_fits(demands[c.demand_index], c.tp, cap, total, free_tp=True)
                       and cus_fit(cus, 0, demands[c.demand_index].cu_request))
        types.append(PartType(hive, cap, total, barred, cus, admits))
    out = tuple(Kind(tuple(members), tuple(m for m, _c in sig), tuple(c for _m, c in sig))
                for (_h, sig), members in sorted(kinds.items(), key=lambda kv: kv[1][0]))
    return Space(tuple(demands), tuple(classes), tuple(types), out)


def _rank(mode: ComputePartitionMode) -> int:
    return list(ComputePartitionMode).index(mode)


def type_index(space: Space, slot: Slot) -> int | None:
    pinned = [i for i, d in enumerate(space.demands) if d.allowed_gpus is not None]
    key = _key(space.demands, pinned, slot)
    return next((t for t, pt in enumerate(space.types)
                 if (pt.hive, pt.capacity_bytes, pt.total_bytes, pt.barred, pt.cus) == key), None)


def most_ranks(space: Space, ci: int, t: int) -> int:
    """Ranks of one class a partition of type ``t`` may hold: bytes, shares, CUs, and one rank
    per instance."""
    got = space.ranks_memo.get((ci, t))
    if got is None:
        c, pt = space.classes[ci], space.types[t]
        got = min(pt.capacity_bytes // max(1, c.bytes_per_rank), space.demands[c.demand_index].replicas,
                  pt.cus // max(1, cu_cost(c.demand.cu_request, pt.cus)))
        got = space.ranks_memo[ci, t] = min(got, SHARE_UNITS // c.share_units) if c.share_units else got
    return got


def complete(space: Space, t: int, pattern: Pattern, value: dict[int, float]) -> Pattern:
    """``pattern`` with whatever ranks still fit added (highest value per byte first): its
    value cannot drop, and full partitions combine into integer plans more often. Classes
    without a positive value are never added, so they are not sorted; once the room left is
    below every remaining class's rank, nothing more fits (column generation calls this
    once per new column: ~10^3 times a plan)."""
    pt = space.types[t]
    counts = dict(pattern)
    rows = _complete_rows(space, t)
    for ci in counts:
        if ci not in rows:  # not admitted empty (a seed's pattern): its own row, once
            rows[ci] = (space.classes[ci].bytes_per_rank, space.classes[ci].share_units, _cus(space, ci, pt.cus))
    left = pt.capacity_bytes - sum(rows[ci][0] * n for ci, n in counts.items())
    share_left = SHARE_UNITS - sum(rows[ci][1] * n for ci, n in counts.items())
    cus_left = pt.cus - sum(rows[ci][2] * n for ci, n in counts.items())
    positive = [ci for ci in pt.admits if value.get(ci, 0.0) > 0]
    positive.sort(key=lambda ci: (-value[ci] / rows[ci][0], ci))
    smallest = min((rows[ci][0] for ci in positive), default=0)
    for ci in positive:
        if left < smallest:
            break
        nbytes, units, cus = rows[ci]
        n = min(left // nbytes, most_ranks(space, ci, t) - counts.get(ci, 0),
                share_left // units if units else left, cus_left // cus)
        if n > 0:
            counts[ci] = counts.get(ci, 0) + n
            left, share_left, cus_left = left - n * nbytes, share_left - n * units, cus_left - n * cus
    return tuple(sorted(counts.items()))


def _complete_rows(space: Space, t: int) -> dict[int, tuple[int, int, int]]:
    """Per class admitted by type ``t``: (bytes per rank, share units, CUs per rank), kept in
    the space's memo (the same for every call of one plan)."""
    rows = space.ranks_memo.get(("complete", t))
    if rows is None:
        cus = space.types[t].cus
        rows = space.ranks_memo["complete", t] = {
            ci: (space.classes[ci].bytes_per_rank, space.classes[ci].share_units, _cus(space, ci, cus))
            for ci in space.types[t].admits}
    return rows


def _cus(space: Space, ci: int, cus: int) -> int:
    return max(1, cu_cost(space.classes[ci].demand.cu_request, cus))


def patterns_of(space: Space, packing: Packing) -> dict[PartitionRef, Pattern]:
    """What each partition of a packing holds, in classes (seed columns for the master)."""
    index = {(space.demands[c.demand_index].name, c.tp): ci for ci, c in enumerate(space.classes)}
    held: dict[PartitionRef, dict[int, int]] = {}
    for a in packing.assignments.values():
        ci = index[a.item.model, a.tp]
        for ref in a.refs:
            held.setdefault(ref, {})
            held[ref][ci] = held[ref].get(ci, 0) + 1
    return {ref: tuple(sorted(c.items())) for ref, c in held.items()}


def _groups(ranks: dict[PartitionRef, int], count: int, tp: int) -> list[tuple[PartitionRef, ...]] | None:
    """``count`` instances of ``tp`` ranks on distinct partitions. Each step caps every
    partition at the instances still to form and takes the ``tp`` fullest (one GPU's
    partitions together on ties): with at least tp x count ranks it never gets stuck."""
    left = dict(ranks)
    out = []
    for k in range(count, 0, -1):
        cand = sorted((ref for ref, n in left.items() if n > 0), key=lambda ref: (-min(left[ref], k), ref))[:tp]
        if len(cand) < tp:
            return None
        for ref in cand:
            left[ref] -= 1
        out.append(tuple(sorted(cand)))
    return out


def assign_modes(space: Space, layouts: dict[tuple[int, int], int], prefer: dict[int, ComputePartitionMode]):
    """Layout counts per kind to a mode per GPU: GPUs already in (``prefer``) a mode keep it first."""
    modes = {}
    for q, kind in enumerate(space.kinds):
        left = list(kind.gpus)
        wanted = {li: layouts.get((q, li), 0) for li in range(len(kind.modes))}
        for li, count in wanted.items():
            for g in [g for g in left if prefer.get(g) == kind.modes[li]][:count]:
                modes[g] = kind.modes[li]
                left.remove(g)
                wanted[li] -= 1
        for li, count in wanted.items():
            for g in left[:count]:
                modes[g] = kind.modes[li]
            left = left[count:]
        if left:
            return None
    return modes


def to_packing(space: Space, slots: dict[PartitionRef, Slot], chosen: dict[tuple[int, Pattern], int],
               instances: dict[tuple[int, int], int], policy: PlannerPolicy) -> Packing | None:
    """Counts back to named instances on concrete partitions (``slots``: the partitions at the
    chosen modes), then the final fill (fill.py). Counts that do not fit (rounded ones) lose
    what does not: a pattern with no partition of its type left (the least valuable first), an
    instance whose ranks are missing, a rank beyond the instances of its class on a partition
    (each rank is a different instance). None when something would overfill a partition."""
    where: dict[tuple[int, int], dict[PartitionRef, int]] = {}
    free: dict[int, list[PartitionRef]] = {}
    for ref, s in sorted(slots.items()):
        free.setdefault(type_index(space, s), []).append(ref)

    def worth(key) -> tuple:
        return (-sum(space.classes[ci].weight * a / space.classes[ci].tp for ci, a in key[1]), key)
    for key in sorted(chosen, key=worth):
        t, pattern = key
        for _ in range(chosen[key]):
            if free.get(t):
                ref = free[t].pop(0)
                for ci, n in pattern:
                    where.setdefault((ci, space.types[t].hive), {})[ref] = n
    items = {i.instance_id: i for i in items_for(space.demands)}
    used: dict[str, int] = {}
    assignments: dict[str, Assignment] = {}
    for (ci, hive), count in sorted(instances.items()):
        c = space.classes[ci]
        ranks = where.get((ci, hive), {})
        while count > 0 and sum(min(n, count) for n in ranks.values()) < c.tp * count:
            count -= 1
        d = space.demands[c.demand_index]
        for refs in _groups(ranks, count, c.tp) or ():
            replica = used.get(d.name, 0)
            if replica >= d.replicas:
                break
            used[d.name] = replica + 1
            item = items[d.instance_id(replica)]
            assignments[item.instance_id] = Assignment(item, c.tp, refs, c.bytes_per_rank)
    fresh = occupy_all({ref: s.empty() for ref, s in slots.items()}, assignments)
    if not all(s.within_limits() for s in fresh.values()):
        return None
    unplaced = [i for iid, i in sorted(items.items()) if iid not in assignments]
    return fill_free_room(Packing(assignments, unplaced, {}, fresh), policy)


def valid(space: Space, packing: Packing) -> bool:
    """The planner's own rules, checked on a decoded plan: each instance's ranks on distinct
    partitions of one hive, each rank fits its partition empty, no partition over its bytes
    or shares, no partition over its CUs (problem.cu_cost: the launcher's rule), no model over
    its replicas."""
    per_model: dict[str, int] = {}
    for a in packing.assignments.values():
        d = a.item.demand
        s = [packing.slots[ref] for ref in a.refs]
        if (len(set(a.refs)) != a.tp or len({x.hive for x in s}) != 1 or a.tp not in d.bytes_per_rank_by_tp
                or any(not rank_fits(d, a.tp, x.capacity_bytes, x.total_bytes, free_tp=True) for x in s)
                or (d.allowed_gpus is not None and any(r.gpu not in d.allowed_gpus for r in a.refs))):
            return False
        per_model[d.name] = per_model.get(d.name, 0) + 1
    if any(per_model.get(d.name, 0) > d.replicas for d in space.demands):
        return False
    return all(x.within_limits() for x in packing.slots.values())
