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

from gpu_sharing.planner import exact
from gpu_sharing.planner.solution import Scope, Solution, SolveResult
from gpu_sharing.planner.surrogate import surrogate_bound
from gpu_sharing.planner.decode import group_ranks
from gpu_sharing.planner.problem import SHARE_UNITS, GpuChoices, Problem, cu_cost


SCIP_NODES_PER_SECOND = 100
"""SCIP's node limit per second of its time share: a deterministic stand-in for the wall clock."""


@dataclass(frozen=True)
class _Group:
    tp: int
    bytes_per_rank: int
    share_units: int
    spans: bool
    classes: tuple[int, ...]
    ranks: int
    """Most ranks all its replicas could need."""
    share: float | None = None
    """The compute share itself: the CUs a rank takes depend on it (problem.cu_cost)."""


def _groups(prob: Problem) -> tuple[list[_Group], dict[tuple[int, int, int], list[int]]] | None:
    """Item groups, and (gpu, layout, slot) -> admissible group indices; None when a class
    spans on some GPUs and not on others (one group has one scope kind; problem.py's node-wide
    rule 2 rules that out, issue 19: taking one GPU's answer for all broke decoding)."""
    keys: dict[tuple, list[int]] = {}
    by_gpu = {g.gpu: g for g in prob.gpus}
    for ci, c in enumerate(prob.classes):
        where = frozenset((g.gpu, k, o) for g in prob.gpus for k in range(g.slots) for o in prob.admits(g, k, c))
        if where:
            kinds = {prob.spans(by_gpu[gpu], c.demand_index) for gpu, _k, _o in where}
            if len(kinds) > 1:
                return None
            spans = kinds.pop()
            keys.setdefault((c.tp, c.bytes_per_rank, c.share_units, c.demand.cu_request or 0.0, spans, where),
                            []).append(ci)
    groups, slots = [], {}
    for (tp, b, units, share, spans, where), cis in sorted(keys.items(),
                                                           key=lambda kv: (-kv[0][1], kv[0][0], min(kv[1]))):
        groups.append(_Group(tp, b, units, spans, tuple(cis), tp * sum(prob.classes[ci].demand.replicas for ci in cis),
                             share or None))
        for g, k, o in where:
            slots.setdefault((g, o, k), []).append(len(groups) - 1)
    return groups, slots


def _fillings(groups: list[_Group], admissible: tuple[int, ...], capacity: int,
              limit: int, cus: int) -> list[tuple[int, ...]] | None:
    """Every maximal filling of one partition of ``capacity`` usable bytes and ``cus`` CUs
    (counts per admissible group; bytes, share units and problem.cu_cost within them), or None
    when there are more than ``limit`` or one could hold two ranks of a tp>1 local group."""
    items = [groups[j] for j in admissible]
    cost = [cu_cost(t.share, cus) for t in items]
    out: list[tuple[int, ...]] = []
    counts: list[int] = []
    # the most bytes, share units and CUs items i.. could still take: a branch that leaves room
    # for one more rank of an item taken below its need, whatever follows, has no maximal filling
    # (pruned at once instead of at every leaf under it; the fillings found are the same)
    most_bytes = [0] * (len(items) + 1)
    most_share = [0] * (len(items) + 1)
    most_cus = [0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        most_bytes[i] = most_bytes[i + 1] + items[i].ranks * items[i].bytes_per_rank
        most_share[i] = most_share[i + 1] + items[i].ranks * items[i].share_units
        most_cus[i] = most_cus[i + 1] + items[i].ranks * cost[i]
    short: list[int] = []  # items taken below their need so far

    def room_for(j: int, left: int, share_left: int, cus_left: int) -> bool:
        return (items[j].bytes_per_rank <= left and items[j].share_units <= share_left
                and 1 <= cost[j] <= cus_left)

    def rec(i: int, left: int, share_left: int, cus_left: int) -> bool:
        if short and any(room_for(j, left - most_bytes[i], share_left - most_share[i], cus_left - most_cus[i])
                         for j in short):
            return True  # not maximal whatever follows
        if i == len(items):
            if any(counts[j] < t.ranks and room_for(j, left, share_left, cus_left) for j, t in enumerate(items)):
                return True  # not maximal: a larger filling covers it
            out.append(tuple(counts))
            return len(out) <= limit
        t = items[i]
        most = min(t.ranks, left // max(1, t.bytes_per_rank),
                   share_left // t.share_units if t.share_units else t.ranks,
                   cus_left // cost[i] if cost[i] else 0)
        if most > 1 and t.tp > 1 and not t.spans:
            return False
        for k in range(most, -1, -1):
            counts.append(k)
            if k < t.ranks:
                short.append(i)
            ok = rec(i + 1, left - k * t.bytes_per_rank, share_left - k * t.share_units, cus_left - k * cost[i])
            if k < t.ranks:
                short.pop()
            counts.pop()
            if not ok:
                return False
        return True

    return out if rec(0, capacity, SHARE_UNITS, cus) else None


@dataclass(frozen=True)
class _Unit:
    """GPUs modelled together: identical GPUs that only take tp=1 local ranks are one unit
    with a count (no symmetric copies for SCIP to branch over); any other GPU is alone."""

    gpus: tuple[int, ...]
    choices: GpuChoices
    """The first member's choices (all members have the same layouts)."""


def _units(prob: Problem, groups: list[_Group], admissible) -> list[_Unit]:
    keyed: dict[tuple, list] = {}
    for g in prob.gpus:
        adm = tuple(tuple(sorted(admissible.get((g.gpu, o, k), []))) for o, lay in enumerate(g.layouts)
                    for k in range(lay.partitions))
        simple = all(groups[j].tp == 1 and not groups[j].spans for a in adm for j in a)
        keyed.setdefault((g.hive, g.layouts, adm) if simple else ("alone", g.gpu), []).append(g)
    return [_Unit(tuple(g.gpu for g in members), members[0]) for _k, members in sorted(
        keyed.items(), key=lambda kv: kv[1][0].gpu)]


def solve_by_configurations(prob: Problem, time_limit_s: float, at_least: int = 0,
                            max_fillings: int = 4000, at_most: int | None = None) -> SolveResult | None:
    """Most placed priority with a proof, or None (SCIP missing, more than ``max_fillings``
    fillings over all partition types, whose Python build alone would exceed the budget, or a
    case the model does not cover). ``at_most``: the surrogate bound when the caller has it."""
    s = pywraplp.Solver.CreateSolver("SCIP")
    if s is None:
        return None
    grouped = _groups(prob)
    if grouped is None:  # CP-SAT's counts model scopes every GPU on its own
        return None
    groups, admissible = grouped
    units = _units(prob, groups, admissible)
    z: dict[tuple[int, int], object] = {}
    y: dict[tuple[int, int, tuple], list[tuple[tuple[int, ...], pywraplp.Variable]]] = {}
    cover: dict[tuple[int, int], list] = {}
    cache: dict[tuple, list[tuple[int, ...]] | None] = {}
    for ui, u in enumerate(units):
        g, m = u.choices, len(u.gpus)
        for o, lay in enumerate(g.layouts):
            z[ui, o] = s.IntVar(0, m, "") if len(g.layouts) > 1 else m
            types: dict[tuple, int] = {}
            for k in range(lay.partitions):
                key = (lay.capacity_bytes[k], lay.cus[k], tuple(sorted(admissible.get((g.gpu, o, k), []))))
                types[key] = types.get(key, 0) + 1
            for (capacity, cus, adm), count in sorted(types.items()):
                if (capacity, cus, adm) not in cache:
                    left = max_fillings - sum(len(f) for f in cache.values() if f)
                    cache[capacity, cus, adm] = _fillings(groups, adm, capacity, left, cus) if left > 0 else None
                fillings = cache[capacity, cus, adm]
                if fillings is None:  # too many for the budget: CP-SAT alone decides
                    return None
                xs = [(f, s.IntVar(0, count * m, "")) for f in fillings]
                y[ui, o, (capacity, cus, adm)] = xs
                _linear(s, [(1, x) for _f, x in xs] + [(-count, z[ui, o])], 0, 0)
                for f, x in xs:
                    for j, a in zip(adm, f):
                        if a:
                            cover.setdefault((ui, j), []).append((a, x))
        if len(g.layouts) > 1:
            s.Add(sum(z[ui, o] for o in range(len(g.layouts))) == m)
    _same_memory_per_hive(s, units, z)
    instances: dict[tuple[int, tuple], pywraplp.Variable] = {}
    per_gpu_ranks: dict[tuple[int, int], pywraplp.Variable] = {}
    for (ui, j), terms in sorted(cover.items(), key=lambda kv: kv[0]):
        t, u = groups[j], units[ui]
        if not t.spans:
            n = instances.setdefault((j, ("unit", ui)), s.IntVar(0, t.ranks // t.tp, ""))
            _linear(s, [(t.tp, n)] + [(-a, x) for a, x in terms], -s.infinity(), 0)
        else:  # units with spanning groups hold one GPU
            n = instances.setdefault((j, ("hive", u.choices.hive)), s.IntVar(0, t.ranks // t.tp, ""))
            r = per_gpu_ranks[u.gpus[0], j] = s.IntVar(0, t.ranks // t.tp, "")
            _linear(s, [(1, r)] + [(-a, x) for a, x in terms], -s.infinity(), 0)
            s.Add(r <= n)
    hive_of = {g.gpu: g.hive for g in prob.gpus}
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
    s.Add(objective <= (surrogate_bound(prob) if at_most is None else at_most))
    if at_least:
        s.Add(objective >= at_least)  # a plan this good is known: prune the rest
    s.Maximize(objective)
    # a deterministic limit decides (branch-and-bound nodes), so a loaded machine gets the same
    # answer, later; the wall clock is only a guard far above it (exact.WALL_GUARD_FACTOR)
    s.SetSolverSpecificParametersAsString(f"limits/totalnodes = {max(1, int(time_limit_s * SCIP_NODES_PER_SECOND))}\n")
    s.SetTimeLimit(max(1000, int(exact.WALL_GUARD_FACTOR * time_limit_s * 1000)))
    code = s.Solve()
    if code == pywraplp.Solver.INFEASIBLE:  # proven: nothing reaches ``at_least``
        return SolveResult("INFEASIBLE", 0, 0, s.wall_time() / 1000, None, "scip-configurations")
    if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return SolveResult("UNKNOWN", 0, 0, s.wall_time() / 1000, None, "scip-configurations")
    sol = _decode(prob, units, admissible, z, y, instances, per_gpu_ranks, {ci: _int(v) for ci, v in placed.items()},
                  groups)
    objective = sum(prob.classes[ci].weight * n for (ci, _sc), n in sol.instances.items())
    bound = int(s.Objective().BestBound() + 1e-6)
    return SolveResult("OPTIMAL" if bound <= objective else "FEASIBLE", objective, max(bound, objective),
                       s.wall_time() / 1000, sol, "scip-configurations")


def _linear(s, terms: list, lower: float, upper: float) -> None:
    """lower <= sum(coef x var) <= upper through the solver's low-level API: the natural API's
    expression objects made building the model take seconds (profiled: most of plan()'s time);
    integer constants (a unit with one layout) move into the bounds."""
    con = s.Constraint(lower, upper)
    coef: dict = {}
    for a, v in terms:
        if isinstance(v, int):
            con.SetBounds(con.lb() - a * v, con.ub() - a * v)
        else:
            coef[v] = coef.get(v, 0) + a
    for v, a in coef.items():
        con.SetCoefficient(v, a)


def _int(v) -> int:
    return v if isinstance(v, int) else int(round(v.solution_value()))


def _same_memory_per_hive(s, units: list[_Unit], z) -> None:
    """NPS is hive-wide: one memory mode per hive, taken by every GPU of every unit in it."""
    for h in sorted({u.choices.hive for u in units}):
        members = [(ui, u) for ui, u in enumerate(units) if u.choices.hive == h]
        modes = sorted({lay.memory for _ui, u in members for lay in u.choices.layouts}, key=lambda m: m.value)
        if len(modes) < 2:
            continue
        pick = {mode: s.IntVar(0, 1, "") for mode in modes}
        s.Add(sum(pick.values()) == 1)
        for ui, u in members:
            for mode in modes:
                s.Add(sum(z[ui, o] for o, lay in enumerate(u.choices.layouts) if lay.memory == mode)
                      == len(u.gpus) * pick[mode])


def _decode(prob: Problem, units: list[_Unit], admissible, z, y, instances, per_gpu_ranks, placed: dict[int, int],
            groups) -> Solution:
    """Layouts and fillings to GPUs and partitions, ranks to instances, instances to models
    (highest priority first)."""
    layout: dict[int, int] = {}
    slot_ranks: dict[tuple[int, int], list[int]] = {}  # (gpu, group) -> slot index per rank
    for ui, u in enumerate(units):
        g = u.choices
        members = iter(u.gpus)
        for o in range(len(g.layouts)):
            for _ in range(_int(z[ui, o])):
                layout[next(members)] = o
        for o, lay in enumerate(g.layouts):
            free: dict[tuple, list[tuple[int, int]]] = {}
            for gpu in (x for x in u.gpus if layout[x] == o):
                for k in range(lay.partitions):
                    key = (lay.capacity_bytes[k], lay.cus[k], tuple(sorted(admissible.get((g.gpu, o, k), []))))
                    free.setdefault(key, []).append((gpu, k))
            for key, slots in sorted(free.items()):
                it = iter(slots)
                for f, x in y.get((ui, o, key), []):
                    for _ in range(_int(x)):
                        gpu, k = next(it)
                        for j, a in zip(key[2], f):
                            slot_ranks.setdefault((gpu, j), []).extend([k] * a)
    made: dict[int, list[tuple[tuple, tuple[tuple[int, int], ...]]]] = {}
    for (j, scope), n in sorted(instances.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        count, t = _int(n), groups[j]
        if scope[0] == "unit":
            for gpu in units[scope[1]].gpus:
                ranks = sorted(slot_ranks.get((gpu, j), []))
                while count and len(ranks) >= t.tp:
                    chunk, ranks = ranks[: t.tp], ranks[t.tp:]
                    made.setdefault(j, []).append((("gpu", gpu), tuple((gpu, k) for k in chunk)))
                    count -= 1
        else:
            rem: dict[tuple[int, int], int] = {}  # the ranks each GPU contributes, by partition
            for (gpu, jj), r in per_gpu_ranks.items():
                if jj == j:
                    for k in sorted(slot_ranks.get((gpu, j), []))[: _int(r)]:
                        rem[gpu, k] = rem.get((gpu, k), 0) + 1
            for refs in group_ranks(rem, count, t.tp, spanning=True):
                made.setdefault(j, []).append((scope, tuple((ref.gpu, ref.index) for ref in refs)))
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
