"""Large-neighbourhood search after the layout search and the pattern step: ruin and recreate
(pure, deterministic).

Why: the layout search (layout_search.py) packs greedily, and on fragmented partitions (CPX,
compute shares, pinned tp) a greedy packing leaves room in pieces no unplaced replica fits:
0.3-3.4% of placed priority below the proven optimum (docs/planner-benchmark.md). What is
missing is a better choice of tp and of partners per partition (a 20.2 GiB rank beside a
3.0 GiB one fills a 23.3 GiB CPX partition; the greedy put a 5.2 GiB tp=8 rank there) and,
with shares or pinned tp, sometimes another mode on a GPU. Exact re-packs of one or two GPUs
by CP-SAT were tried first: with every unplaced replica and the room left elsewhere in the
model, one re-pack took 100-300 ms on this machine and most found nothing within a
deterministic limit that fits a 2 s budget (GPU pairs of an 8-GPU node: 5-20 s per plan for
+0 to +3 placed priority on the benchmark's cpx and pinned-tp cases). So this step uses the
ruin-and-recreate form of large-neighbourhood search (Schrimpf et al., 2000), about a
millisecond of Python per move:
1. ruin: free every instance (never a fixed one: a re-plan's kept instances) with a rank on
   1-3 GPUs, or every instance of 1-3 models, or empty one GPU (holding no fixed instance)
   and give it another of its compute modes; the freed replicas join the unplaced ones;
2. recreate: place that pool highest priority first (a model that misses once is skipped:
   room only shrinks), each at the tp and on the partitions that leave the least room
   unused (best fit over every tp the demand allows, ranks on distinct partitions of one
   hive, bytes, compute shares and CUs checked by Slot.fits);
3. accept when it places more priority, or as much with the free room in fewer partitions
   (sum of squared free fractions: room a later move can fill); otherwise undo.
It stops at the knapsack bound, when nothing is unplaced, or after MAX_MOVES moves. The
moves come from a generator with a fixed seed: the same input gives the same plan on any
machine, and no clock is read. Measured on the benchmark's cpx, pinned-tp and shares cases
that keep a gap (14 of 15) after the layout search alone: +23 placed priority in all after 25
moves, +31 after 50, +35 after 150, about 1 ms of CPU per move. plan() runs it after the
pattern step (pattern_master.py), which closes most of those gaps itself: there it still
gained +8 in 3 of 72 cases (25 moves: +1, 100 moves: +9), and on re-plans' keeping searches
(no pattern step) +5 in 2 of 72, for a median 38 ms (fresh) and 8 ms (keeping) where it ran;
below the pattern step's 1 s budget +46 in 17 of 36 (docs/planner-benchmark.md).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.hardware.modes import ComputePartitionMode
from gpu_sharing.planner.fill import placed_weight
from gpu_sharing.planner.packing import ORDERS, Assignment, Item, Packing, Slot, _occupy, _release, build_slots, occupy_all
from gpu_sharing.planner.problem import rank_fits

MAX_MOVES = 50
"""Ruin-and-recreate moves at most: a deterministic work limit."""
MOVES_PER_BUDGET_S = 100
"""Moves per second of ``PlannerPolicy.time_budget_s`` when that allows fewer than MAX_MOVES:
a move costs about 1 ms of CPU (2 ms on a loaded 2-core machine), so the step stays within
a tenth to a fifth of any budget, and the budget, not the clock, sets the work."""


def moves_for(time_budget_s: float) -> int:
    """The moves a plan with this time budget may make (MAX_MOVES from 0.5 s up)."""
    return max(0, min(MAX_MOVES, int(time_budget_s * MOVES_PER_BUDGET_S)))
SEED = 19
"""The moves' generator seed: fixed, so that plans are reproducible."""
SWITCH_SHARE = 0.3
"""Share of the moves that empty one GPU and give it another of its compute modes (the
layout search fixes modes before packing; the best layout may differ once packed well)."""


@dataclass(frozen=True)
class Improved:
    packing: Packing
    modes: dict[int, ComputePartitionMode]
    placed: int
    moves: int
    """Ruin-and-recreate moves made: the deterministic work this step did."""
    gained: int
    """Placed priority added over the packing it started from."""


class _Room:
    """Where each (model, tp) rank may go at all, per GPU (GPUs allowed, partition large
    enough): computed once per GPU layout, so a move only checks free bytes and shares. It
    also keeps each GPU's most free bytes on one partition (recomputed after a change, when
    asked): a rank larger than that skips the GPU (measured: 7 in 10 GPUs a rank is checked
    against have no partition with room)."""

    def __init__(self, slots: dict[PartitionRef, Slot]):
        self.on_gpu: dict[int, list[Slot]] = {}
        for ref in sorted(slots, key=lambda r: (r.gpu, r.index)):
            self.on_gpu.setdefault(ref.gpu, []).append(slots[ref])
        self._eligible: dict[int, dict[tuple[str, int], list[Slot]]] = {g: {} for g in self.on_gpu}
        self._most: dict[int, int | None] = {g: None for g in self.on_gpu}
        """Per GPU the most free bytes on one partition; None when to be recomputed."""

    def switch(self, gpu: int, slots: list[Slot]) -> None:
        """``gpu`` now has these partitions (another compute mode)."""
        self.on_gpu[gpu] = sorted(slots, key=lambda s: s.ref.index)
        self._eligible[gpu] = {}
        self._most[gpu] = None

    def occupy(self, slots: dict[PartitionRef, Slot], a: Assignment) -> None:
        """packing._occupy, and the GPUs it touched are noted."""
        _occupy(slots, a)
        for ref in a.refs:
            self._most[ref.gpu] = None

    def release(self, slots: dict[PartitionRef, Slot], a: Assignment) -> None:
        """packing._release, and the GPUs it touched are noted."""
        _release(slots, a)
        for ref in a.refs:
            self._most[ref.gpu] = None

    def eligible(self, item: Item, tp: int, g: int) -> list[Slot]:
        """GPU ``g``'s partitions a tp-``tp`` rank of ``item`` may use at all, by index."""
        key = (item.model, tp)
        cache = self._eligible[g]
        out = cache.get(key)
        if out is None:
            d = item.demand
            out = cache[key] = [s for s in self.on_gpu[g] if (d.allowed_gpus is None or g in d.allowed_gpus)
                                and rank_fits(d, tp, s.capacity_bytes, s.total_bytes, free_tp=True)]
        return out

    def best_fit(self, item: Item) -> Assignment | None:
        """The tp and partitions of one hive that leave the least room unused, or None: over
        every tp, the smallest (largest slack of the chosen partitions, tp, hive), where a
        hive's chosen partitions are its ``tp`` smallest by (slack, GPU, index). Slot.fits is
        written inline for a tenant without a share or count (Slot.fits otherwise), and a candidate that
        cannot beat the best so far (its slack is no smaller) is not collected; at tp 1 the
        least candidate is kept as it comes instead of grouped: this runs ~10^3 times a plan
        (10-20% less time than grouping every tp, same choices: plan_digest identical)."""
        d = item.demand
        request = d.cu_request
        most = self._most
        for g, known in most.items():
            if known is None:
                most[g] = max(s.capacity_bytes - s.used_bytes for s in self.on_gpu[g])
        best = None  # (slack, tp, chosen, need)
        for tp in sorted(d.bytes_per_rank_by_tp):
            need = d.bytes_per_rank_by_tp[tp]
            # a later tp (or hive) wins only with strictly less slack than the best so far
            limit = best[0] if best is not None else None
            one = None  # tp 1: ((slack, hive, GPU, index), ref), the least: what the groups below choose
            groups: dict[int, list[tuple]] = {}
            for g, room in most.items():
                if room < need:
                    continue
                for s in self.eligible(item, tp, g):
                    slack = s.capacity_bytes - s.used_bytes - need
                    if slack < 0 or (limit is not None and slack >= limit):
                        continue
                    if request:  # a share or a CU count (limits.cu_count): Slot.fits
                        if not s.fits(need, request):
                            continue
                    elif s.cus_used >= s.cus:
                        continue
                    ref = s.ref
                    if tp == 1:
                        key = (slack, s.hive, ref.gpu, ref.index)
                        if one is None or key < one[0]:
                            one = (key, ref)
                            limit = slack + 1  # only as little slack can still win
                        continue
                    groups.setdefault(s.hive, []).append((slack, ref.gpu, ref.index, ref))
            if one is not None:
                (slack, _hive, gpu, index), ref = one
                best = (slack, 1, [(slack, gpu, index, ref)], need)
                continue
            for hive in sorted(groups):
                group = groups[hive]
                if len(group) < tp:
                    continue
                chosen = heapq.nsmallest(tp, group)
                slack = chosen[-1][0]
                if best is None or slack < best[0]:
                    best = (slack, tp, chosen, need)
        if best is None:
            return None
        _slack, tp, chosen, need = best
        return Assignment(item, tp, tuple(sorted(c[3] for c in chosen)), need)


def _consolidation(slots: dict[PartitionRef, Slot]) -> float:
    """Sum of squared free fractions: higher when the free room sits in fewer partitions."""
    return sum(((s.capacity_bytes - s.used_bytes) / s.capacity_bytes) ** 2 for s in slots.values())


def mode_slots(inventory, specs, policy, modes: dict[int, ComputePartitionMode],
               candidates: dict[int, list[ComputePartitionMode]]) -> dict[int, dict[ComputePartitionMode, list[Slot]]]:
    """Per GPU, the empty partitions of each compute mode in ``candidates`` (build_slots, one
    call per mode for the whole node)."""
    out: dict[int, dict[ComputePartitionMode, list[Slot]]] = {i: {} for i in candidates}
    for mode in sorted({m for ms in candidates.values() for m in ms}, key=lambda m: m.value):
        at = build_slots(inventory, {i: mode if mode in candidates[i] else modes[i] for i in candidates}, specs, policy)
        for s in at.values():
            if mode in candidates[s.ref.gpu]:
                out[s.ref.gpu].setdefault(mode, []).append(s)
    return out


def _fresh(slots: dict[PartitionRef, Slot], assignments: dict[str, Assignment]) -> dict[PartitionRef, Slot]:
    return occupy_all({ref: s.empty() for ref, s in slots.items()}, assignments)


def _ruin(rng: random.Random, assignments: dict[str, Assignment], fixed: frozenset[str], gpus: list[int],
          switchable: list[int], layouts, modes) -> tuple[list[Assignment], tuple[int, ComputePartitionMode] | None]:
    """Step 1: the instances to free, and the (GPU, new mode) of a mode switch, if any."""
    movable = sorted(iid for iid in assignments if iid not in fixed)
    kind = rng.random()
    if switchable and kind < SWITCH_SHARE:  # one GPU emptied and set to another of its modes
        g = rng.choice(switchable)
        mode = rng.choice(sorted((m for m in layouts[g] if m != modes[g]), key=lambda m: m.value))
        return [assignments[iid] for iid in movable if any(r.gpu == g for r in assignments[iid].refs)], (g, mode)
    if kind < SWITCH_SHARE + (1 - SWITCH_SHARE) / 2 or not movable:
        hit = set(rng.sample(gpus, min(len(gpus), rng.choice((1, 2, 2, 3)))))
        return [assignments[iid] for iid in movable if any(r.gpu in hit for r in assignments[iid].refs)], None
    models = sorted({assignments[iid].item.model for iid in movable})
    hit = set(rng.sample(models, min(len(models), rng.randint(1, 3))))
    return [assignments[iid] for iid in movable if assignments[iid].item.model in hit], None


def _set_partitions(slots: dict[PartitionRef, Slot], room: _Room, gpu: int, new: list[Slot]) -> list[Slot]:
    """``gpu`` gets the partitions ``new`` (empty); its old ones are returned, for an undo."""
    old = [s for ref, s in slots.items() if ref.gpu == gpu]
    for s in old:
        del slots[s.ref]
    slots.update({s.ref: s for s in new})
    room.switch(gpu, new)
    return old


def _recreate(room: _Room, slots: dict[PartitionRef, Slot], assignments: dict[str, Assignment],
              pool: list[Item]) -> list[Assignment]:
    """Step 2: ``pool`` (sorted) placed best fit where it fits; what was placed."""
    added: list[Assignment] = []
    missed: set[str] = set()
    for item in pool:
        a = None if item.model in missed else room.best_fit(item)
        if a is None:
            missed.add(item.model)
            continue
        room.occupy(slots, a)
        assignments[item.instance_id] = a
        added.append(a)
    return added


def improve(packing: Packing, bound: int, modes: dict[int, ComputePartitionMode],
            layouts: dict[int, dict[ComputePartitionMode, list[Slot]]] | None = None,
            fixed: frozenset[str] = frozenset(), max_moves: int = MAX_MOVES) -> Improved:
    """``packing`` (at compute ``modes``) improved by ruin and recreate (see the module
    docstring). ``layouts``: per GPU, the empty partitions of each compute mode it may take
    (mode_slots); ``fixed``: instance ids that must stay where they are (a re-plan's kept
    running instances; their GPUs keep their mode). The result places at least as much
    priority; the input packing is not changed."""
    start = placed_weight(packing)
    packing_modes, modes = dict(modes), dict(modes)
    if not packing.unplaced or start >= bound:
        return Improved(packing, packing_modes, start, 0, 0)
    slots = _fresh(packing.slots, packing.assignments)
    room = _Room(slots)
    assignments = dict(packing.assignments)
    unplaced = sorted(packing.unplaced, key=ORDERS["priority"])
    rng = random.Random(SEED)
    gpus = sorted({ref.gpu for ref in slots})
    held = {r.gpu for iid in fixed if iid in assignments for r in assignments[iid].refs}
    switchable = [g for g in gpus if g not in held and len((layouts or {}).get(g, {})) > 1]
    placed, moves = start, 0
    consolidated = _consolidation(slots)
    while moves < max_moves and placed < bound and unplaced:
        moves += 1
        ruined, switch = _ruin(rng, assignments, fixed, gpus, switchable, layouts, modes)
        for a in ruined:
            room.release(slots, a)
            del assignments[a.item.instance_id]
        undo_switch = None
        if switch is not None:
            g, mode = switch
            undo_switch = (g, modes[g], _set_partitions(
                slots, room, g, [s.empty() for s in layouts[g][mode]]))
            modes[g] = mode
        pool = sorted([a.item for a in ruined] + unplaced, key=ORDERS["priority"])
        added = _recreate(room, slots, assignments, pool)
        weight = placed - sum(a.item.weight for a in ruined) + sum(a.item.weight for a in added)
        spread = _consolidation(slots)
        if weight > placed or (weight == placed and spread >= consolidated):  # step 3: accept
            placed, consolidated = weight, spread
            unplaced = [i for i in pool if i.instance_id not in assignments]
            continue
        for a in added:  # or undo
            room.release(slots, a)
            del assignments[a.item.instance_id]
        if undo_switch is not None:
            g, old_mode, old = undo_switch
            _set_partitions(slots, room, g, old)
            modes[g] = old_mode
        for a in ruined:
            room.occupy(slots, a)
            assignments[a.item.instance_id] = a
    if placed <= start:
        return Improved(packing, packing_modes, start, moves, 0)
    evicted = {k: v for k, v in packing.evicted_by.items() if k not in assignments}
    ordered = dict(sorted(slots.items(), key=lambda x: (x[0].gpu, x[0].index)))
    return Improved(Packing(assignments, unplaced, evicted, ordered), modes, placed, moves, placed - start)
