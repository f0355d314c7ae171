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

from gpu_sharing.planner.packing import (ORDERS, Assignment, Item, Packing, Slot, SpanRules, _choose, _occupy,
                                         fitting_slots)
from gpu_sharing.planner.types import PlannerPolicy


def _free(s: Slot) -> int:
    return s.capacity_bytes - s.used_bytes


def choose_free(slots: dict, item: Item, placed_gpus: dict[str, set[int]], policy: PlannerPolicy) -> Assignment | None:
    """The best way ``item`` fits the room left, over the real feasible set, or None."""
    d = item.demand
    siblings = placed_gpus.get(item.model, set())
    for tp in sorted(d.bytes_per_rank_by_tp):
        need = d.bytes_per_rank_by_tp[tp]
        cands = fitting_slots(slots, d, tp, free_tp=True)
        options: list[tuple[tuple, tuple]] = []
        by_hive: dict[int, list[Slot]] = {}
        for s in cands:
            by_hive.setdefault(s.hive, []).append(s)
        for hive, group in sorted(by_hive.items()):
            if len(group) < tp:
                continue
            per_gpu: dict[int, list[Slot]] = {}
            for s in group:
                per_gpu.setdefault(s.ref.gpu, []).append(s)
            # fewest GPUs: take whole GPUs with the most fitting partitions first, tightest inside
            gpus = sorted(per_gpu, key=lambda g: (-len(per_gpu[g]), g in siblings, g))
            chosen: list[Slot] = []
            for g in gpus:
                chosen += sorted(per_gpu[g], key=lambda s: (_free(s), s.ref))[: tp - len(chosen)]
                if len(chosen) == tp:
                    break
            used_gpus = {s.ref.gpu for s in chosen}
            spread = 1 if (policy.spread_replicas and used_gpus & siblings) else 0
            slack = sum(_free(s) - need for s in chosen)
            options.append(((len(used_gpus), spread, slack, hive), tuple(sorted(s.ref for s in chosen))))
        if options:
            options.sort()
            return Assignment(item, tp, options[0][1], need)
    return None


def fill_free_room(packing: Packing, policy: PlannerPolicy, rules: SpanRules | None = None) -> Packing:
    """``packing`` with every unplaced replica that fits placed (``rules``: keep the first
    pass's placement rules, for an operator who chose them)."""
    if not packing.unplaced:
        return packing
    assignments = dict(packing.assignments)
    placed_gpus: dict[str, set[int]] = {}
    for a in assignments.values():
        placed_gpus.setdefault(a.item.model, set()).update(r.gpu for r in a.refs)
    still = []
    failed: set[str] = set()  # over the full set a replica fits wherever its model's does: one miss is enough
    for item in sorted(packing.unplaced, key=ORDERS["priority"]):
        if rules is None and item.model in failed:
            still.append(item)
            continue
        a = (choose_free(packing.slots, item, placed_gpus, policy) if rules is None
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
