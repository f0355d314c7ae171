"""Turn an exact solution (counts per partition) into named placements (pure, deterministic).

The solver counts ranks of each (model, tp) class per partition; here they become
instances. Kept running instances come first, at their own partitions and ids. The rest
are formed by taking, each time, the t partitions with the most ranks left: as every
partition holds at most as many ranks as instances remain (a solver constraint), this
never gets stuck. Among equally full partitions the GPU of the first pick is preferred, so
tensor-parallel ranks stay on one GPU when the counts allow it. New instances take the
lowest free replica numbers of their model.
"""

from __future__ import annotations

from typing import Sequence

from gpu_sharing.hardware.inventory import Inventory, PartitionRef
from gpu_sharing.planner.exact import keepable
from gpu_sharing.planner.solution import Solution
from gpu_sharing.planner.packing import Assignment, Item, Packing, Slot, _occupy, items_for
from gpu_sharing.planner.problem import Problem
from gpu_sharing.planner.types import ModelDemand, RunningInstance


def _slots(prob: Problem, sol: Solution) -> dict[PartitionRef, Slot]:
    out = {}
    for g in prob.gpus:
        lay = g.layouts[sol.layout[g.gpu]]
        for k in range(lay.partitions):
            ref = PartitionRef(g.gpu, k)
            out[ref] = Slot(ref, g.hive, lay.capacity_bytes[k], lay.total_bytes[k], cus=lay.cus[k])
    return out


def group_ranks(rem: dict[tuple[int, int], int], count: int, tp: int, spanning: bool) -> list[tuple[PartitionRef, ...]]:
    """``count`` instances of ``tp`` ranks each from the ranks left per (gpu, slot): distinct
    partitions, and distinct GPUs when spanning. Fullest first, so it never gets stuck."""
    groups = []
    for _ in range(count):
        if spanning:
            per_gpu: dict[int, int] = {}
            for (g, _k), left in rem.items():
                per_gpu[g] = per_gpu.get(g, 0) + left
            gpus = sorted((g for g, left in per_gpu.items() if left > 0), key=lambda g: (-per_gpu[g], g))[:tp]
            chosen = [max((key for key in rem if key[0] == g and rem[key] > 0), key=lambda key: (rem[key], -key[1]))
                      for g in gpus]
        else:
            chosen = sorted((key for key, left in rem.items() if left > 0), key=lambda key: (-rem[key], key))[:tp]
        if len(chosen) < tp:
            raise ValueError("solution counts do not split into tensor-parallel groups")  # a solver bug, never input
        for key in chosen:
            rem[key] -= 1
        groups.append(tuple(sorted(PartitionRef(g, k) for g, k in chosen)))
    return groups


def to_packing(prob: Problem, sol: Solution, demands: Sequence[ModelDemand],
               current: Sequence[RunningInstance]) -> Packing:
    slots = _slots(prob, sol)
    items = {i.instance_id: i for i in items_for(demands)}
    assignments: dict[str, Assignment] = {}
    taken: dict[int, set[int]] = {}
    keep = keepable(prob, current)
    by_gpu = {g.gpu: g for g in prob.gpus}
    rem = dict(sol.ranks)
    left = dict(sol.instances)
    for iid in sol.kept:
        ci, run = keep[iid]
        c = prob.classes[ci]
        a = Assignment(items[iid], c.tp, tuple(run.partitions), run.memory_bytes_per_rank)
        assignments[iid] = a
        taken.setdefault(c.demand_index, set()).add(run.replica)
        for ref in run.partitions:
            rem[ref.gpu, ref.index, ci] -= 1
        left[ci, prob.scope(by_gpu[run.partitions[0].gpu], c)] -= 1
    for (ci, scope), count in sorted(left.items()):
        c = prob.classes[ci]
        mine = {(g, k): v for (g, k, cc), v in rem.items() if cc == ci and v > 0
                and prob.scope(by_gpu[g], c) == scope}
        for refs in group_ranks(mine, count, c.tp, prob.one_rank_per_gpu(scope)):
            used = taken.setdefault(c.demand_index, set())
            replica = min(set(range(c.demand.replicas)) - used)
            used.add(replica)
            item = items[c.demand.instance_id(replica)]
            assignments[item.instance_id] = Assignment(item, c.tp, refs, c.bytes_per_rank)
    for a in sorted(assignments.values(), key=lambda a: a.item.instance_id):
        _occupy(slots, a)
    unplaced = [i for iid, i in sorted(items.items()) if iid not in assignments]
    return Packing(assignments, unplaced, _evictions(assignments, current, items), slots)


def _evictions(assignments: dict[str, Assignment], current: Sequence[RunningInstance],
               items: dict[str, Item]) -> dict[str, str]:
    """Running instances left unplaced whose partitions went to a higher-priority newcomer."""
    out = {}
    running = {r.instance_id for r in current}
    for run in sorted(current, key=lambda r: r.instance_id):
        item = items.get(run.instance_id)
        if item is None or run.instance_id in assignments:
            continue
        for a in sorted(assignments.values(), key=lambda a: (-a.item.weight, a.item.instance_id)):
            if a.item.weight > item.weight and a.item.instance_id not in running and set(a.refs) & set(run.partitions):
                out[run.instance_id] = a.item.instance_id
                break
    return out


def solution_from_packing(prob: Problem, inventory: Inventory, modes, packing: Packing) -> Solution:
    """The greedy plan in the solver's numbering: a start point (hint) for CP-SAT."""
    layout = {}
    for g in prob.gpus:
        gpu = inventory.gpu(g.gpu)
        want = modes[g.gpu]
        choices = [o for o, lay in enumerate(g.layouts) if lay.compute == want]
        same_mem = [o for o in choices if g.layouts[o].memory == gpu.memory_mode]
        layout[g.gpu] = (same_mem or choices or [0])[0]
    index = {(c.demand.name, c.tp): ci for ci, c in enumerate(prob.classes)}
    by_gpu = {g.gpu: g for g in prob.gpus}
    ranks: dict[tuple[int, int, int], int] = {}
    inst: dict[tuple[int, int], int] = {}
    for a in packing.assignments.values():
        ci = index.get((a.item.model, a.tp))
        if ci is None:
            continue
        for ref in a.refs:
            ranks[ref.gpu, ref.index, ci] = ranks.get((ref.gpu, ref.index, ci), 0) + 1
        key = (ci, prob.scope(by_gpu[a.refs[0].gpu], prob.classes[ci]))
        inst[key] = inst.get(key, 0) + 1
    return Solution(layout, ranks, inst)

