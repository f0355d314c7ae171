"""The final fill: every replica still unplaced goes into the room the plan leaves, if it fits (pure).

Why: a plan is only as good as its last step. The exact solvers may stop at their limit with
a gap, and the fast first pass obeys placement rules (smallest tp, one GPU per model) that the
real hardware does not impose. This step makes every plan *maximal*: once it ran, no unplaced
replica fits the free bytes and compute shares left on any set of partitions it may use.
Room only shrinks as replicas are placed, so trying each unplaced replica once (highest
priority first) is enough: one that did not fit earlier cannot fit later.

Where a replica may go (the real feasible set, unless the operator chose
``placement.prefer_local_tp``): any tensor-parallel degree the demand allows whose rank fits,
ranks on distinct partitions of one XGMI hive. Among the ways that fit it prefers the
smallest tp, then one GPU over several, then a GPU without a replica of the same model, then
the tightest fit.
"""

from __future__ import annotations

from gpu_sharing.planner.packing import ORDERS, Assignment, Item, Packing, Slot, SpanRules, _choose, _occupy
from gpu_sharing.planner.types import ModelDemand, PlannerPolicy

SHARE_LIMIT = 1.0 + 1e-9
"""Compute shares on one partition sum to at most 1 (packing.Slot.fits, same tolerance)."""


def _free(s: Slot) -> int:
    return s.capacity_bytes - s.used_bytes


class FreeRoom:
    """An index of one set of slots for ``choose_free``, valid while room only shrinks (replicas
    are placed, none removed): per rank size the slots such a rank could ever use (GPU
    allowed, partition large enough, rank within its capacity),
    grouped by hive and GPU in index order, so a query looks only at what the bytes and shares
    left decide. It also remembers what found no room: (tp, GPUs allowed, smallest partition,
    share) -> the fewest bytes per rank that missed; a rank as large or larger misses again,
    since the slots it could use are a subset and they only fill up. Why: the greedy asks this
    question ~50 times per packing and the layout search packs ~30 times per plan (issue 19)."""

    def __init__(self, slots: dict) -> None:
        self.slots = slots
        layout: dict[int, dict[int, list[Slot]]] = {}
        for ref in sorted(slots):
            s = slots[ref]
            layout.setdefault(s.hive, {}).setdefault(ref.gpu, []).append(s)
        self._layout = [(hive, sorted(gpus.items())) for hive, gpus in sorted(layout.items())]
        self._static: dict[tuple, list] = {}
        self._missed: dict[tuple, int] = {}

    def usable(self, d: ModelDemand, need: int) -> list:
        """[(hive, [(gpu, [slots])])] where a rank of ``need`` bytes of ``d`` fits when empty
        (problem.rank_fits over the full set: the rank fits the capacity, the partition is
        large enough, the GPU is allowed)."""
        allowed, least = d.allowed_gpus, d.min_partition_bytes
        key = (need, allowed, least)
        out = self._static.get(key)
        if out is None:
            out = []
            for hive, gpus in self._layout:
                here = [(gpu, ok) for gpu, group in gpus if allowed is None or gpu in allowed
                        for ok in [[s for s in group if need <= s.capacity_bytes and s.total_bytes >= least]] if ok]
                if here:
                    out.append((hive, here))
            self._static[key] = out
        return out

    def _miss_key(self, d: ModelDemand, tp: int) -> tuple:
        return (tp, d.allowed_gpus, d.min_partition_bytes, d.compute_share or 0.0)

    def missed(self, d: ModelDemand, tp: int, need: int) -> bool:
        least = self._missed.get(self._miss_key(d, tp))
        return least is not None and need >= least

    def note_miss(self, d: ModelDemand, tp: int, need: int) -> None:
        key = self._miss_key(d, tp)
        self._missed[key] = min(need, self._missed.get(key, need))


def choose_free(slots: dict, item: Item, placed_gpus: dict[str, set[int]], policy: PlannerPolicy,
                room: FreeRoom | None = None) -> Assignment | None:
    """The best way ``item`` fits the room left, over the real feasible set, or None. ``room``:
    an index of ``slots`` kept across calls while nothing is removed from them."""
    d = item.demand
    if room is None:
        room = FreeRoom(slots)
    siblings = placed_gpus.get(item.model, set())
    share = d.compute_share or 0.0
    spread_replicas = policy.spread_replicas
    for tp in sorted(d.bytes_per_rank_by_tp):
        need = d.bytes_per_rank_by_tp[tp]
        if room.missed(d, tp, need):
            continue
        best = None
        for hive, gpus in room.usable(d, need):
            per_gpu = []
            count = 0
            for gpu, group in gpus:
                fit = [s for s in group if s.used_bytes + need <= s.capacity_bytes and s.share_used + share <= SHARE_LIMIT]
                if fit:
                    per_gpu.append((gpu, fit))
                    count += len(fit)
            if count < tp:
                continue
            # fewest GPUs: take whole GPUs with the most fitting partitions first, tightest inside
            if tp == 1:
                gpu, fit = min(per_gpu, key=lambda p: (-len(p[1]), p[0] in siblings, p[0]))
                chosen = [min(fit, key=_free)]  # the first of the tightest: ``fit`` is in partition order
            else:
                chosen = []
                for gpu, fit in sorted(per_gpu, key=lambda p: (-len(p[1]), p[0] in siblings, p[0])):
                    chosen += sorted(fit, key=_free)[: tp - len(chosen)]  # stable: partition order breaks ties
                    if len(chosen) == tp:
                        break
            used_gpus = {s.ref.gpu for s in chosen}
            spread = 1 if (spread_replicas and used_gpus & siblings) else 0
            slack = sum(_free(s) - need for s in chosen)
            key = (len(used_gpus), spread, slack, hive)  # hives differ: keys never tie
            if best is None or key < best[0]:
                best = (key, chosen)
        if best is not None:
            return Assignment(item, tp, tuple(sorted(s.ref for s in best[1])), need)
        room.note_miss(d, tp, need)
    return None


def fill_free_room(packing: Packing, policy: PlannerPolicy, rules: SpanRules | None = None,
                   room: FreeRoom | None = None) -> Packing:
    """``packing`` with every unplaced replica that fits placed (``rules``: keep the first
    pass's placement rules, for an operator who chose them; ``room``: an index of its slots
    already built, see FreeRoom)."""
    if not packing.unplaced:
        return packing
    assignments = dict(packing.assignments)
    placed_gpus: dict[str, set[int]] = {}
    for a in assignments.values():
        placed_gpus.setdefault(a.item.model, set()).update(r.gpu for r in a.refs)
    if rules is None and room is None:
        room = FreeRoom(packing.slots)
    still = []
    failed: set[str] = set()  # over the full set a replica fits wherever its model's does: one miss is enough
    for item in sorted(packing.unplaced, key=ORDERS["priority"]):
        if rules is None and item.model in failed:
            still.append(item)
            continue
        a = (choose_free(packing.slots, item, placed_gpus, policy, room) if rules is None
             else _choose(packing.slots, item, placed_gpus, policy, rules))
        if a is None:
            still.append(item)
            failed.add(item.model)
            continue
        _occupy(packing.slots, a)
        assignments[item.instance_id] = a
        placed_gpus.setdefault(item.model, set()).update(r.gpu for r in a.refs)
    evicted = {k: v for k, v in packing.evicted_by.items() if k not in assignments}
    return Packing(assignments, still, evicted, packing.slots)


def placed_weight(packing: Packing) -> int:
    return sum(a.item.weight for a in packing.assignments.values())
