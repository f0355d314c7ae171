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
the tightest fit. The question is answered from an index of the room left (free_room.py),
which the layout search's packings share with this step.
"""

from __future__ import annotations

from gpu_sharing.planner.free_room import FreeRoom
from gpu_sharing.planner.packing import ORDERS, Assignment, Item, Packing, SpanRules, _choose, _occupy
from gpu_sharing.planner.types import PlannerPolicy


_NONE: frozenset[int] = frozenset()


def choose_free(slots: dict, item: Item, placed_gpus: dict[str, set[int]], policy: PlannerPolicy,
                room: FreeRoom | None = None) -> Assignment | None:
    """The best way ``item`` fits the room left, over the real feasible set, or None. ``room``:
    the FreeRoom of ``slots``, when the caller places through it (FreeRoom.occupy)."""
    d = item.demand
    if room is None:
        room = FreeRoom(slots)
    siblings = placed_gpus.get(item.model, _NONE)
    spread_replicas = policy.spread_replicas
    missed = room.missed
    for tp, need, miss_key in room.degrees(d):
        least = missed.get(miss_key)
        if least is not None and need >= least:  # a rank this large found no room before
            continue
        if tp == 1:
            best = room.one_rank(d, need, siblings, spread_replicas)
        else:  # fewest GPUs: whole GPUs with the most fitting partitions first, tightest inside
            best = room.many_ranks(d, need, tp, siblings, spread_replicas)
        if best is not None:
            refs = (best[1][0].ref,) if tp == 1 else tuple(sorted(s.ref for s in best[1]))
            return Assignment(item, tp, refs, need)
        missed[miss_key] = need if least is None else min(need, least)
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
    still = fill_in_order(packing.slots, sorted(packing.unplaced, key=ORDERS["priority"]), assignments, placed_gpus,
                          policy, rules, room)
    evicted = {k: v for k, v in packing.evicted_by.items() if k not in assignments}
    return Packing(assignments, still, evicted, packing.slots)


def fill_in_order(slots: dict, queue: list[Item], assignments: dict[str, Assignment],
                  placed_gpus: dict[str, set[int]], policy: PlannerPolicy, rules: SpanRules | None,
                  room: FreeRoom | None, most_lost: int | None = None) -> list[Item] | None:
    """fill_free_room's loop over ``queue`` (already in priority order): places what fits into
    ``assignments`` and ``placed_gpus`` (through ``room`` when given) and returns the rest.
    ``most_lost``: the caller wants the result only while the replicas left weigh at most this
    much (the layout search, for a packing that must beat its best so far); past it, None."""
    still = []
    lost = 0
    failed: set[str] = set()  # over the full set a replica fits wherever its model's does: one miss is enough
    for item in queue:
        if rules is None and item.model in failed:
            a = None
        else:
            a = (choose_free(slots, item, placed_gpus, policy, room) if rules is None
                 else _choose(slots, item, placed_gpus, policy, rules))
        if a is None:
            still.append(item)
            failed.add(item.model)
            lost += item.weight
            if most_lost is not None and lost > most_lost:
                return None
            continue
        if room is not None:
            room.occupy(a)
        else:
            _occupy(slots, a)
        assignments[item.instance_id] = a
        placed_gpus.setdefault(item.model, set()).update(r.gpu for r in a.refs)
    return still


def placed_weight(packing: Packing) -> int:
    return sum(a.item.weight for a in packing.assignments.values())
