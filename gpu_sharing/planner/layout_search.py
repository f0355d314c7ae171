"""A fast strong plan over the real feasible set: choose compute modes, then pack by the knapsack's choice (pure).

Why: the exact models take seconds to build in Python and, on nodes with compute shares,
pinned tp or NPS choices, their wall-clock-limited search often ended no better than the
greedy at the current modes (issue 19: 269 where 303 was reachable). What decides such
plans is mostly the partition layout (CPX multiplies the compute-share room by 8, SPX keeps
big models whole) and which replicas to place (the surrogate knapsack's choice: the most
priority in the fewest bytes). So this module tries a few layouts: the current modes, each
mode on every GPU, and then one GPU at a time changed while that improves; and for each
layout packs the knapsack's chosen replicas first (by priority, by size, or by priority per
byte, over the full feasible set: any tp, ranks on distinct partitions of one hive), then
everything else by priority (fill.py). The knapsack ignores how bytes split into partitions,
so at the best layout the chosen set is then varied too: one replica fewer of a chosen model,
or none of it (measured on pinned-CPX nodes: +3 to +4 placed priority on 3 of 5 cases). The
best plan wins; ties go to the earliest candidate, so the current modes win a tie. Every step is a fixed amount of work in a fixed order: the same input gives the same
plan on any machine, whatever its load.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_sharing.hardware.modes import ComputePartitionMode
from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.fill import choose_free, fill_in_order, placed_weight
from gpu_sharing.planner.free_room import FreeRoom, room_shape
from gpu_sharing.planner.packing import ORDERS, Assignment, Item, Packing, Slot, _occupy, build_slots, items_for
from gpu_sharing.planner.types import PlannerPolicy, RunningInstance

def _density_key(item) -> tuple:
    """Most priority per byte first (the knapsack's own order), then largest."""
    smallest = min(item.demand.bytes_per_rank_by_tp[tp] * tp for tp in item.demand.bytes_per_rank_by_tp)
    return (-item.weight / max(1, smallest), -smallest, item.model, item.replica)


_KEYS = {**ORDERS, "density": _density_key}
PACK_ORDERS = ("priority", "size", "density")

MAX_EVALUATIONS = 16
"""(layout, chosen set) pairs packed at most, each in the three orders: a deterministic work
limit. Measured on the benchmark's 8-GPU families: 24 layouts instead of 12 gained 0-3
placed priority on a third of the cases that do not reach the bound, for twice the time."""


NEAR_BEST = 0.97
"""The search's other packings that place at least this share of its best one go with its
result (Found.near): the pattern step offers their partitions' patterns to its MIP. Measured
at 0.97 (docs/planner-benchmark.md, session 9); 0.99 was compared only with the patterns as
seeds of the column generation, where it gained less (pinned-tp seeds 1-2: +1 against +10)."""


@dataclass(frozen=True)
class Found:
    modes: dict[int, ComputePartitionMode]
    packing: Packing
    placed: int
    evaluations: int
    """Layouts packed: the deterministic work this search did."""
    near: tuple[Packing, ...] = ()
    """Other whole packings of this search placing at least NEAR_BEST of ``placed``, in the
    order they were made (pattern_master.improve: integer-feasible patterns for its MIP)."""


class PackCache:
    """What every packing of one search shares, made once: the replicas of the demand list
    (packing.items_for) and each order's ranking of them (the keys are total orders: sorting
    a subset gives the subset of the sorted list), and per layout the partitions' sizes
    (packing.build_slots) and the FreeRoom's shape, per chosen set its replicas. Why: the search packs up to 48 times per
    plan, and building these each time cost a third of a packing (issue 19)."""

    def __init__(self, inventory, demands, policy: PlannerPolicy, specs) -> None:
        self.inventory, self.policy, self.specs = inventory, policy, specs
        self.items = items_for(demands)
        self.total = sum(item.weight for item in self.items)
        self._ranked: dict[str, list[Item]] = {}
        self._layouts: dict[tuple, tuple] = {}
        self._chosen: dict[tuple, frozenset[str]] = {}
        self.degrees: dict = {}
        """FreeRoom's answers per demand, shared by every packing."""
        self.traces: dict[tuple, list[tuple[Item, Assignment | None]]] = {}
        """(layout, order) -> the first phase of one packing there, in order: each replica
        and where it went (None: it missed). Another packing at that layout and order that
        meets the same replicas in the same order makes the same choices (same room, same
        models placed and missed), so it takes them from here instead of asking FreeRoom
        again: the search's variants of the chosen set (one replica fewer, least priority per
        byte first) share most of their first phase with the plan they vary."""
        self.last_trace: list[tuple[Item, Assignment | None]] = []

    def ranked(self, order: str) -> list[Item]:
        out = self._ranked.get(order)
        if out is None:
            out = self._ranked[order] = sorted(self.items, key=_KEYS[order])
        return out

    def chosen(self, chosen: dict[str, int]) -> frozenset[str]:
        """Ids of the replicas ``chosen`` asks for (model -> count: its first replicas), with
        nothing kept."""
        key = tuple(sorted(chosen.items()))
        out = self._chosen.get(key)
        if out is None:
            want = dict(chosen)
            first = set()
            for item in self.items:
                if want.get(item.model, 0) > 0:
                    want[item.model] -= 1
                    first.add(item.instance_id)
            out = self._chosen[key] = frozenset(first)
        return out

    def slots(self, modes) -> tuple[dict[PartitionRef, Slot], tuple]:
        """Empty slots at ``modes`` (as packing.build_slots makes them) and their room_shape."""
        key = tuple(sorted(modes.items()))
        known = self._layouts.get(key)
        if known is None:
            slots = build_slots(self.inventory, modes, self.specs, self.policy)
            known = self._layouts[key] = ([(s.ref, s.hive, s.capacity_bytes, s.total_bytes, s.cus)
                                           for s in slots.values()], room_shape(slots))
        sizes, shape = known
        return {ref: Slot(ref, hive, cap, total, cus=cus) for ref, hive, cap, total, cus in sizes}, shape


def pack_at(inventory, demands, policy: PlannerPolicy, specs, modes, chosen: dict[str, int], order: str,
            kept: dict[str, RunningInstance] | None = None, cache: PackCache | None = None,
            beat: int = -1) -> Packing | None:
    """The running instances in ``kept`` where they are (on GPUs that keep their mode), then the
    replicas in ``chosen`` (model -> count, kept ones included) in ``order`` (ORDERS: "size" is
    largest first, "priority" highest first), then the rest by priority. ``cache``: what
    packings of the same inventory, demands and policy share. ``beat``: the packing is wanted
    only if it places more priority than this; None as soon as the replicas that missed
    (room only shrinks: a miss stays a miss) leave no more than ``beat`` to place. Same
    packing otherwise: the search keeps only a strictly better one, so its result is unchanged
    and about half of its packings stop early."""
    cache = cache or PackCache(inventory, demands, policy, specs)
    most_lost = cache.total - beat - 1
    slots, shape = cache.slots(modes)
    assignments, placed_gpus = {}, {}
    first = cache.chosen(chosen) if not kept else _keep(inventory, modes, slots, chosen, kept, cache.items,
                                                         assignments, placed_gpus)
    failed: set[str] = set()  # room only shrinks: a model that missed once misses again
    lost = 0
    room = FreeRoom(slots, shape, cache.degrees)
    trace_key = (tuple(sorted(modes.items())), order)
    known = cache.traces.get(trace_key, ())
    trace = cache.last_trace = []
    for item in cache.ranked(order):
        if item.instance_id not in first:
            continue
        step = len(trace)
        if step < len(known) and known[step][0] is item:
            a = known[step][1]  # the same replicas so far in the same order: the same choice
        else:
            known = ()
            a = None if item.model in failed else choose_free(slots, item, placed_gpus, policy, room)
        trace.append((item, a))
        if a is None:
            failed.add(item.model)
            lost += item.weight
            if lost > most_lost:
                return None
            continue
        room.occupy(a)
        assignments[item.instance_id] = a
        placed_gpus.setdefault(item.model, set()).update(r.gpu for r in a.refs)
    # then the missed and the rest by priority (fill.fill_free_room's order and loop)
    queue = [item for item in cache.ranked("priority") if item.instance_id not in assignments]
    still = fill_in_order(slots, queue, assignments, placed_gpus, policy, None, room, most_lost)
    cache.traces.setdefault(trace_key, trace)
    return None if still is None else Packing(assignments, still, {}, slots)


def _keep(inventory, modes, slots, chosen: dict[str, int], kept: dict[str, RunningInstance], items,
          assignments: dict, placed_gpus: dict) -> set[str]:
    """Occupy the running instances in ``kept`` that stay (their GPUs keep their mode, they still
    fit); return the ids of the other replicas ``chosen`` asks for (kept ones count)."""
    want = dict(chosen)
    first = set()
    same = {g.index for g in inventory.gpus if modes[g.index] == g.compute_mode}
    for item in items:
        run = kept.get(item.instance_id)
        if run is not None and all(ref.gpu in same and ref in slots for ref in run.partitions):
            a = Assignment(item, len(run.partitions), tuple(run.partitions), run.memory_bytes_per_rank)
            if all(slots[ref].fits(a.bytes_per_rank, item.demand.cu_request) for ref in a.refs):
                _occupy(slots, a)
                assignments[item.instance_id] = a
                placed_gpus.setdefault(item.model, set()).update(r.gpu for r in a.refs)
                want[item.model] = want.get(item.model, 0) - 1
                continue
        if want.get(item.model, 0) > 0:
            want[item.model] -= 1
            first.add(item.instance_id)
    return first


def search_layouts(inventory, demands, policy: PlannerPolicy, specs, candidates: dict[int, list[ComputePartitionMode]],
                   chosen: dict[str, int], bound: int, max_evaluations: int = MAX_EVALUATIONS,
                   kept: dict[str, RunningInstance] | None = None) -> Found:
    """The best plan over a few layouts and chosen sets (see the module docstring); stops early
    at ``bound``. ``kept``: running instances that stay where they are (a re-plan); the caller
    leaves their GPUs only their current mode in ``candidates``."""
    gpus = sorted(candidates)
    current = {g.index: g.compute_mode for g in inventory.gpus}
    start = {i: (current[i] if current[i] in candidates[i] else candidates[i][0]) for i in gpus}
    tried: set[tuple] = set()
    cache = PackCache(inventory, demands, policy, specs)
    best: list = [None]  # (modes, chosen, packing, placed, order)
    made: list[tuple[Packing, int]] = []  # every whole packing and its placed priority, in order (Found.near)

    def evaluate(modes: dict, want: dict[str, int], orders: tuple[str, ...] = PACK_ORDERS) -> None:
        key = (tuple(modes[i] for i in gpus), tuple(sorted(want.items())))
        if key in tried or len(tried) >= max_evaluations:
            return
        tried.add(key)
        for order in orders:
            packing = pack_at(inventory, demands, policy, specs, modes, want, order, kept, cache,
                              -1 if best[0] is None else best[0][3])
            if packing is None:  # it could not place more than the best so far
                continue
            placed = placed_weight(packing)
            made.append((packing, placed))
            if best[0] is None or placed > best[0][3]:
                best[0] = (dict(modes), dict(want), packing, placed, order)
                cache.traces[(tuple(sorted(modes.items())), order)] = cache.last_trace  # what the variants vary
            if placed >= bound:
                break

    def done() -> bool:
        return best[0][3] >= bound or len(tried) >= max_evaluations

    evaluate(start, chosen)
    every = sorted({m for i in gpus for m in candidates[i]}, key=lambda m: list(ComputePartitionMode).index(m))
    for mode in every:
        if done():
            break
        evaluate({i: (mode if mode in candidates[i] else start[i]) for i in gpus}, chosen)
    _improve(best, gpus, done, lambda base: [({**base[0], i: mode}, base[1]) for i in gpus for mode in candidates[i]
                                             if mode != base[0][i]], evaluate)
    # the knapsack's choice ignores how bytes split into partitions: one replica fewer of a
    # chosen model (least priority per byte first), or none of it, may let more priority fit
    density = {d.name: (d.priority + 1) / max(1, min(tp * b for tp, b in d.bytes_per_rank_by_tp.items()))
               for d in demands}
    _improve(best, gpus, done, lambda base: [
        (base[0], variant) for name in sorted(base[1], key=lambda n: (density[n], n)) if base[1][name] > 0
        for variant in ({**base[1], name: base[1][name] - 1}, {k: v for k, v in base[1].items() if k != name})],
        lambda modes, want: evaluate(modes, want, (best[0][4],)))  # the order that packed best so far
    modes, _want, packing, placed, _order = best[0]
    near = tuple(p for p, weight in made if p is not packing and weight >= NEAR_BEST * placed)
    return Found(modes, packing, placed, len(tried), near)


def _improve(best: list, gpus, done, neighbours, evaluate) -> None:
    """First-improvement local search over ``neighbours(best)`` until none improves or the work
    limit is reached."""
    while not done():
        base = best[0]
        for modes, want in neighbours((base[0], base[1])):
            evaluate(modes, want)
            if best[0] is not base or done():
                break
        if best[0] is base:
            return
