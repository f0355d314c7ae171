"""An index of the room left in a set of partitions, for the greedy's question "where does this rank go" (pure).

Why: the layout search packs up to 48 times per plan and each packing asks ~50 times where a
replica fits (fill.choose_free); asking every partition each time was 87% of plan() on
pinned-CPX nodes (issue 19). The index answers the same question with the same answer, from
each GPU's partitions kept sorted by free bytes (then partition index): the partitions a rank
fits are one bisection away, already tightest first. packing.Slot stays the one record of
what is used; the index only orders it, and is told of every placement (``occupy``), never
of a removal: it is valid while room only shrinks, as in a packing and in the final fill.

It also remembers what found no room: (tp, GPUs allowed, smallest partition, share) -> the
fewest bytes per rank that missed. A rank as large or larger misses again: the partitions it
could use are a subset of those, and they only fill up.
"""

from __future__ import annotations

from bisect import bisect_left

from gpu_sharing.planner.packing import Assignment, Slot
from gpu_sharing.planner.problem import cu_cost
from gpu_sharing.planner.types import ModelDemand

SHARE_LIMIT = 1.0 + 1e-9
"""Compute shares on one partition sum to at most 1 (packing.Slot.fits, same tolerance)."""


def room_shape(slots: dict) -> tuple:
    """What a FreeRoom needs that only the partitions' sizes decide, so that packings at one
    layout share it: per hive (ascending), per GPU (ascending) its partitions in the order of
    the empty GPU (capacity, then index) and its smallest partition's total bytes."""
    layout: dict[int, dict[int, list]] = {}
    for ref in sorted(slots):
        layout.setdefault(slots[ref].hive, {}).setdefault(ref.gpu, []).append(ref)
    return tuple((hive, tuple((gpu, tuple(sorted(refs, key=lambda r: (slots[r].capacity_bytes, r.index))),
                               min(slots[r].total_bytes for r in refs)) for gpu, refs in sorted(gpus.items())))
                 for hive, gpus in sorted(layout.items()))


class _Hive:
    """One hive's GPUs (ascending) as parallel lists: per GPU its free bytes ascending, its
    slots in that order (ties by partition index), the most compute share used on one of
    them and its smallest partition's total bytes."""

    __slots__ = ("hive", "gpus", "frees", "orders", "shares", "smallest", "cu_rooms", "cus_low", "cus_high")

    def __init__(self, hive: int) -> None:
        self.hive = hive
        self.gpus: list[int] = []
        self.frees: list[list[int]] = []
        self.orders: list[list[Slot]] = []
        self.shares: list[float] = []
        self.smallest: list[int] = []
        self.cu_rooms: list[int] = []
        """Per GPU the fewest CUs left on one of its partitions (problem.cu_cost's rule)."""
        self.cus_low: list[int] = []
        self.cus_high: list[int] = []


class FreeRoom:
    """See the module docstring."""

    def __init__(self, slots: dict, shape: tuple | None = None, degrees: dict | None = None) -> None:
        self.slots = slots
        self._where: dict[int, tuple[_Hive, int]] = {}
        self._hives: list[_Hive] = []
        for hive, gpus in shape or room_shape(slots):
            h = _Hive(hive)
            for k, (gpu, refs, smallest) in enumerate(gpus):
                order = [slots[r] for r in refs]
                h.gpus.append(gpu)
                h.frees.append([s.capacity_bytes - s.used_bytes for s in order])
                h.orders.append(order)
                h.shares.append(max(s.share_used for s in order))
                h.smallest.append(smallest)
                h.cu_rooms.append(min(s.cus - s.cus_used for s in order))
                h.cus_low.append(min(s.cus for s in order))
                h.cus_high.append(max(s.cus for s in order))
                self._where[gpu] = (h, k)
                if any(s.used_bytes for s in order):  # ``refs`` is the order of the empty GPU
                    self._resort(gpu)
            self._hives.append(h)
        self.missed: dict[tuple, int] = {}
        """What found no room: (tp, GPUs allowed, smallest partition, share) -> fewest bytes per rank."""
        self._tps: dict[int, tuple[ModelDemand, list[tuple[int, int, tuple]]]] = {} if degrees is None else degrees
        """id(demand) -> (demand, degrees): ``degrees`` shares it between rooms of one demand list."""

    def _resort(self, gpu: int) -> None:
        h, k = self._where[gpu]
        entries = sorted([(s.capacity_bytes - s.used_bytes, s.ref.index, s) for s in h.orders[k]])
        h.frees[k][:] = [e[0] for e in entries]
        h.orders[k][:] = [e[2] for e in entries]
        h.shares[k] = max(s.share_used for s in h.orders[k])
        h.cu_rooms[k] = min(s.cus - s.cus_used for s in h.orders[k])

    def occupy(self, a: Assignment) -> None:
        """Place ``a`` in the slots (as packing._occupy does) and keep the index true: a GPU
        with one changed partition moves it to its new place, one with several is re-sorted."""
        share, iid, nbytes = a.item.demand.compute_share or 0.0, a.item.instance_id, a.bytes_per_rank
        refs = a.refs
        gpus = {r.gpu for r in refs} if len(refs) > 1 else None
        for ref in refs:
            s = self.slots[ref]
            old = s.capacity_bytes - s.used_bytes
            s.used_bytes += nbytes
            s.share_used += share
            s.cus_used += cu_cost(a.item.demand.cu_request, s.cus)
            s.occupants.append(iid)
            if gpus is None or len(gpus) == len(refs):
                self._move(s, old)
        if gpus is not None and len(gpus) < len(refs):
            for gpu in gpus:
                self._resort(gpu)

    def _move(self, s: Slot, old_free: int) -> None:
        """``s`` (the only partition of its GPU that changed) to its place by free bytes, then index."""
        h, k = self._where[s.ref.gpu]
        frees, order = h.frees[k], h.orders[k]
        j = bisect_left(frees, old_free)
        while order[j] is not s:
            j += 1
        del frees[j], order[j]
        free, index = s.capacity_bytes - s.used_bytes, s.ref.index
        j = bisect_left(frees, free)
        while j < len(frees) and frees[j] == free and order[j].ref.index < index:
            j += 1
        frees.insert(j, free)
        order.insert(j, s)
        if s.share_used > h.shares[k]:
            h.shares[k] = s.share_used
        if s.cus - s.cus_used < h.cu_rooms[k]:
            h.cu_rooms[k] = s.cus - s.cus_used

    def degrees(self, d: ModelDemand) -> list[tuple[int, int, tuple]]:
        """(tp, bytes per rank, what a miss is remembered under), smallest tp first."""
        known = self._tps.get(id(d))
        if known is None or known[0] is not d:
            key = (d.allowed_gpus, d.min_partition_bytes, d.cu_request or 0.0)
            known = self._tps[id(d)] = (d, [(tp, d.bytes_per_rank_by_tp[tp], (tp, *key))
                                            for tp in sorted(d.bytes_per_rank_by_tp)])
        return known[1]

    def many_ranks(self, d: ModelDemand, need: int, tp: int, siblings, spread_replicas: bool):
        """The best choice of ``tp`` partitions (tp > 1) as (key, slots), or None: per hive, whole
        GPUs with the most fitting partitions first (then without a sibling, then the lowest
        index), tightest partitions inside; the hive with the smallest (GPUs used, spread, slack,
        hive) wins (fill.choose_free's rule). Fitting: bytes, compute share, GPU allowed and
        partition size (problem.rank_fits over the full set and Slot.fits)."""
        share = d.cu_request or 0.0  # a CU count fails compute_fits_all: Slot.fits decides
        allowed, least = d.allowed_gpus, d.min_partition_bytes
        best = None
        for h in self._hives:
            found = []
            total = 0
            for gpu, i, n, fit, order in _gpus_with_room(h, need, share, allowed, least):
                found.append((-n, gpu in siblings, gpu, i, fit, order))  # GPUs differ: sorting stops at gpu
                total += n
            if total < tp:
                continue
            found.sort()
            chosen: list[Slot] = []
            for _n, _sibling, _gpu, i, fit, order in found:
                take = tp - len(chosen)
                chosen += fit[:take] if fit is not None else order[i:i + take]
                if len(chosen) == tp:
                    break
            used_gpus = {s.ref.gpu for s in chosen}
            spread = 1 if (spread_replicas and used_gpus & siblings) else 0
            slack = sum(s.capacity_bytes - s.used_bytes - need for s in chosen)
            key = (len(used_gpus), spread, slack, h.hive)  # hives differ: keys never tie
            if best is None or key < best[0]:
                best = (key, chosen)
        return best

    def one_rank(self, d: ModelDemand, need: int, siblings, spread_replicas: bool):
        """The best tp=1 choice as (key, [slot]), or None: per hive the GPU with the most fitting
        partitions, then one without a sibling, then the lowest index; its tightest partition;
        the hive with the smallest (1, spread, slack, hive) wins (fill.choose_free's rule)."""
        share = d.cu_request or 0.0  # a CU count fails compute_fits_all: Slot.fits decides
        allowed, least = d.allowed_gpus, d.min_partition_bytes
        best = None
        for h in self._hives:
            top = None
            for gpu, i, n, fit, order in _gpus_with_room(h, need, share, allowed, least):
                tightest = fit[0] if fit is not None else order[i]
                if top is None or n > top[0] or (n == top[0] and top[1] and gpu not in siblings):
                    top = (n, gpu in siblings, tightest)
            if top is not None:
                s = top[2]
                key = (1, 1 if (spread_replicas and top[1]) else 0, s.capacity_bytes - s.used_bytes - need, h.hive)
                if best is None or key < best[0]:
                    best = (key, [s])
        return best


def _gpus_with_room(h: _Hive, need: int, share: float, allowed, least: int) -> list[tuple]:
    """Per GPU of ``h`` with a partition that takes one more rank of ``need`` bytes (and
    ``share``, GPU allowed, partition of at least ``least`` total bytes): (gpu, i, n, fit, order),
    ``n`` partitions fit, tightest first: ``fit`` lists them, or is None when they are all of
    ``order[i:]`` (compute and size cannot refuse any there: one bisection answered). ``whole``:
    the rank passes Slot.fits' compute checks on every partition of the GPU (its share fits the
    most loaded one, its CUs the one with fewest left), written inline: ~10^5 calls a plan."""
    out = []
    shares, cu_rooms, lows, highs = h.shares, h.cu_rooms, h.cus_low, h.cus_high
    for k, frees in enumerate(h.frees):
        i = bisect_left(frees, need)  # free >= need (hence the rank fits the capacity)
        n = len(frees) - i
        if not n:
            continue
        gpu = h.gpus[k]
        if allowed is not None and gpu not in allowed:
            continue
        order = h.orders[k]
        if share:
            whole = (shares[k] + share <= SHARE_LIMIT and cu_cost(share, lows[k]) >= 1
                     and cu_cost(share, highs[k]) <= cu_rooms[k])
        else:
            whole = cu_rooms[k] >= 1
        if h.smallest[k] < least or not whole:
            fit = [s for s in order[i:] if s.total_bytes >= least and s.fits(0, share)]
            if fit:
                out.append((gpu, i, len(fit), fit, order))
        else:
            out.append((gpu, i, n, None, order))
    return out
