"""A second exact solver: a configuration model over partition fillings, solved by SCIP (pure).

Why two solvers: CP-SAT (exact.py) proves most problems in milliseconds, but a few per
hundred, many mid-size models on 5-8 GPUs or 64 CPX partitions, keep a gap for seconds: its
counts model has a weak LP bound, and closing knapsack gaps by search is slow. Here each
partition takes one of its maximal fillings (a count of ranks per item group, enumerated
exactly in bytes), so the LP bound is the strong configuration bound, and SCIP (bundled with
OR-Tools) closes the same cases in tens of milliseconds.
Item groups: classes with the same tp, bytes per rank, share and admissible partitions are
interchangeable, so replicas of different models of one size share slots. A tp>1 instance
needs its ranks in distinct partitions: a filling never holds two ranks of one tp>1 local
group (when one could, None is returned and CP-SAT alone decides). Spanning groups keep
at most one rank per GPU per instance, as in exact.py. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from gpu_sharing.planner.exact import Scope, Solution, SolveResult
from gpu_sharing.planner.problem import SHARE_UNITS, Problem, surrogate_bound


@dataclass(frozen=True)
class _Group:
    tp: int
    bytes_per_rank: int
    share_units: int
    spans: bool
    classes: tuple[int, ...]
    ranks: int
    """Most ranks all its replicas could need."""


def _groups(prob: Problem) -> tuple[list[_Group], dict[tuple[int, int, int], list[int]]]:
    """Item groups, and (gpu, layout, slot) -> admissible group indices."""
    keys: dict[tuple, list[int]] = {}
    by_gpu = {g.gpu: g for g in prob.gpus}
    for ci, c in enumerate(prob.classes):
        where = frozenset((g.gpu, k, o) for g in prob.gpus for k in range(g.slots) for o in prob.admits(g, k, c))
        if where:
            spans = prob.spans(by_gpu[next(iter(where))[0]], c.demand_index)
            keys.setdefault((c.tp, c.bytes_per_rank, c.share_units, spans, where), []).append(ci)
    groups, slots = [], {}
    for (tp, b, share, spans, where), cis in sorted(keys.items(), key=lambda kv: (-kv[0][1], kv[0][0], min(kv[1]))):
        groups.append(_Group(tp, b, share, spans, tuple(cis), tp * sum(prob.classes[ci].demand.replicas for ci in cis)))
        for g, k, o in where:
            slots.setdefault((g, o, k), []).append(len(groups) - 1)
    return groups, slots


def _fillings(groups: list[_Group], admissible: tuple[int, ...], capacity: int,
              limit: int) -> list[tuple[int, ...]] | None:
    """Every maximal filling of one partition (counts per admissible group), or None when there
    are more than ``limit`` or one could hold two ranks of a tp>1 local group."""
    items = [groups[j] for j in admissible]
    out: list[tuple[int, ...]] = []
    counts: list[int] = []

    def rec(i: int, left: int, share_left: int) -> bool:
        if i == len(items):
            if any(counts[j] < t.ranks and t.bytes_per_rank <= left and t.share_units <= share_left
                   for j, t in enumerate(items)):
                return True  # not maximal: a larger filling covers it
            out.append(tuple(counts))
            return len(out) <= limit
        t = items[i]
        most = min(t.ranks, left // max(1, t.bytes_per_rank),
                   share_left // t.share_units if t.share_units else t.ranks)
        if most > 1 and t.tp > 1 and not t.spans:
            return False
        for k in range(most, -1, -1):
            counts.append(k)
            ok = rec(i + 1, left - k * t.bytes_per_rank, share_left - k * t.share_units)
            counts.pop()
            if not ok:
                return False
        return True

    return out if rec(0, capacity, SHARE_UNITS) else None


def solve_by_configurations(prob: Problem, time_limit_s: float, at_least: int = 0,
                            max_fillings: int = 20000) -> SolveResult | None:
    """Most placed priority with a proof, or None (SCIP missing, too many fillings, or a case
    the model does not cover)."""
    s = pywraplp.Solver.CreateSolver("SCIP")
    if s is None:
        return None
    groups, admissible = _groups(prob)
    z: dict[tuple[int, int], object] = {}
    y: dict[tuple[int, int, tuple], list[tuple[tuple[int, ...], pywraplp.Variable]]] = {}
    cover: dict[tuple[int, int], list] = {}
    cache: dict[tuple, list[tuple[int, ...]] | None] = {}
    for g in prob.gpus:
        for o, lay in enumerate(g.layouts):
            z[g.gpu, o] = s.IntVar(0, 1, "") if len(g.layouts) > 1 else 1
            types: dict[tuple, int] = {}
            for k in range(lay.partitions):
                key = (lay.capacity_bytes[k], tuple(sorted(admissible.get((g.gpu, o, k), []))))
                types[key] = types.get(key, 0) + 1
            for (capacity, adm), count in sorted(types.items()):
                if (capacity, adm) not in cache:
                    cache[capacity, adm] = _fillings(groups, adm, capacity, max_fillings)
                fillings = cache[capacity, adm]
                if fillings is None:
                    return None
                xs = [(f, s.IntVar(0, count, "")) for f in fillings]
                y[g.gpu, o, (capacity, adm)] = xs
                s.Add(sum(x for _f, x in xs) == count * z[g.gpu, o])
                for f, x in xs:
                    for j, a in zip(adm, f):
                        if a:
                            cover.setdefault((g.gpu, j), []).append(a * x)
        if len(g.layouts) > 1:
            s.Add(sum(z[g.gpu, o] for o in range(len(g.layouts))) == 1)
    _same_memory_per_hive(s, prob, z)
    instances: dict[tuple[int, Scope], pywraplp.Variable] = {}
    per_gpu_ranks: dict[tuple[int, int], pywraplp.Variable] = {}
    hive_of = {g.gpu: g.hive for g in prob.gpus}
    for (gpu, j), terms in sorted(cover.items(), key=lambda kv: kv[0]):
        t = groups[j]
        if not t.spans:
            n = instances.setdefault((j, ("gpu", gpu)), s.IntVar(0, t.ranks // t.tp, ""))
            s.Add(t.tp * n <= sum(terms))
        else:
            h = hive_of[gpu]
            n = instances.setdefault((j, ("hive", h)), s.IntVar(0, t.ranks // t.tp, ""))
            r = per_gpu_ranks[gpu, j] = s.IntVar(0, t.ranks // t.tp, "")
            s.Add(r <= sum(terms))
            s.Add(r <= n)
    for (j, scope), n in instances.items():
        if scope[0] == "hive":
            s.Add(sum(r for (gpu, jj), r in per_gpu_ranks.items() if jj == j and hive_of[gpu] == scope[1])
                  == groups[j].tp * n)
    placed = {ci: s.IntVar(0, prob.classes[ci].demand.replicas, "") for t in groups for ci in t.classes}
    for j, t in enumerate(groups):
        s.Add(sum(placed[ci] for ci in t.classes) <= sum(n for (jj, _sc), n in instances.items() if jj == j))
    for di, d in enumerate(prob.demands):
        mine = [v for ci, v in placed.items() if prob.classes[ci].demand_index == di]
        if mine:
            s.Add(sum(mine) <= d.replicas)
    objective = sum(prob.classes[ci].weight * v for ci, v in placed.items())
    s.Add(objective <= surrogate_bound(prob))
    if at_least:
        s.Add(objective >= at_least)  # a plan this good is known: prune the rest
    s.Maximize(objective)
    s.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    code = s.Solve()
    if code == pywraplp.Solver.INFEASIBLE:  # proven: nothing reaches ``at_least``
        return SolveResult("INFEASIBLE", 0, 0, s.wall_time() / 1000, None, "scip-configurations")
    if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return SolveResult("UNKNOWN", 0, 0, s.wall_time() / 1000, None, "scip-configurations")
    sol = _decode(prob, admissible, z, y, instances, per_gpu_ranks, {ci: _int(v) for ci, v in placed.items()}, groups)
    objective = sum(prob.classes[ci].weight * n for (ci, _sc), n in sol.instances.items())
    bound = int(s.Objective().BestBound() + 1e-6)
    return SolveResult("OPTIMAL" if bound <= objective else "FEASIBLE", objective, max(bound, objective),
                       s.wall_time() / 1000, sol, "scip-configurations")


def _int(v) -> int:
    return v if isinstance(v, int) else int(round(v.solution_value()))


def _same_memory_per_hive(s, prob: Problem, z) -> None:
    for h in sorted({g.hive for g in prob.gpus}):
        members = [g for g in prob.gpus if g.hive == h]
        modes = sorted({lay.memory for g in members for lay in g.layouts}, key=lambda m: m.value)
        if len(modes) < 2:
            continue
        for mode in modes:
            ind = [sum(z[g.gpu, o] for o, lay in enumerate(g.layouts) if lay.memory == mode) for g in members]
            for a, b in zip(ind, ind[1:]):
                s.Add(a == b)


def _decode(prob: Problem, admissible, z, y, instances, per_gpu_ranks, placed: dict[int, int], groups) -> Solution:
    """Fillings to partitions, ranks to instances, instances to models (highest priority first)."""
    layout = {g.gpu: next(o for o in range(len(g.layouts)) if _int(z[g.gpu, o])) for g in prob.gpus}
    slot_ranks: dict[tuple[int, int], list[int]] = {}  # (gpu, group) -> slot index per rank
    for g in prob.gpus:
        o = layout[g.gpu]
        lay = g.layouts[o]
        free = {}
        for k in range(lay.partitions):
            free.setdefault((lay.capacity_bytes[k], tuple(sorted(admissible.get((g.gpu, o, k), [])))), []).append(k)
        for (gg, oo, key), xs in sorted(y.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            if gg != g.gpu or oo != o:
                continue
            slots = iter(free[key])
            for f, x in xs:
                for _ in range(_int(x)):
                    k = next(slots)
                    for j, a in zip(key[1], f):
                        slot_ranks.setdefault((g.gpu, j), []).extend([k] * a)
    made: dict[int, list[tuple[Scope, tuple[tuple[int, int], ...]]]] = {}
    for (j, scope), n in sorted(instances.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        count, t = _int(n), groups[j]
        if scope[0] == "gpu":
            ranks = sorted(slot_ranks.get((scope[1], j), []))
            for i in range(count):
                made.setdefault(j, []).append((scope, tuple((scope[1], k) for k in ranks[i * t.tp:(i + 1) * t.tp])))
        else:
            left = {gpu: _int(r) for (gpu, jj), r in per_gpu_ranks.items() if jj == j and _int(r)}
            pools = {gpu: sorted(slot_ranks.get((gpu, j), [])) for gpu in left}
            for _ in range(count):
                gpus = sorted(left, key=lambda gpu: (-left[gpu], gpu))[: t.tp]
                refs = []
                for gpu in gpus:
                    left[gpu] -= 1
                    refs.append((gpu, pools[gpu].pop(0)))
                    if not left[gpu]:
                        del left[gpu]
                made.setdefault(j, []).append((scope, tuple(refs)))
    ranks_out: dict[tuple[int, int, int], int] = {}
    inst_out: dict[tuple[int, Scope], int] = {}
    for j, t in enumerate(groups):
        pool = made.get(j, [])
        for ci in sorted(t.classes, key=lambda ci: (-prob.classes[ci].weight, ci)):
            for _ in range(min(placed.get(ci, 0), len(pool))):
                scope, refs = pool.pop(0)
                inst_out[ci, scope] = inst_out.get((ci, scope), 0) + 1
                for gpu, k in refs:
                    ranks_out[gpu, k, ci] = ranks_out.get((gpu, k, ci), 0) + 1
    return Solution(layout, ranks_out, inst_out)

