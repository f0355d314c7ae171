"""The integer program over the pattern master's columns (pure): CP-SAT picks whole layouts,
patterns and instances.

Why its own module: pattern_master.py grows the columns (column generation), this module
turns a set of columns into the best plan they allow; each stays within the size rule.

The model, for GPU kinds q (interchangeable GPUs), partition types t and classes c (a model
at one tp) in hives h: w[q, l] GPUs of kind q in mode l (sum_l w = GPUs of the kind);
x[t, p] partitions of type t holding pattern p (at most the partitions the modes give);
n[c, h] instances of c in hive h; maximise sum weight x n. Every row is "at most":
tp x n[c, h] <= ranks the patterns give, sum_h n <= replicas. An instance's tp ranks sit on distinct partitions: a partition whose pattern holds a >= 2 ranks of
a tp >= 2 class needs n[c, h] >= a (each of its ranks is a different instance).

Measured alternatives (docs/planner-benchmark.md, "Pattern step: measured alternatives"): the
exact form of that rule for spare ranks (sum_p min(a_p, n) x_p >= tp x n via a one-hot of n)
and reduced-cost upper bounds on the counts both made CP-SAT's plans worse within its
deterministic limit on the benchmark; HiGHS and SCIP solve this model to optimality but took
3-15x CP-SAT's time on the same columns.

The caller passes only the columns a better plan may use (reduced-cost fixing,
pattern_master.improve) and bars the layouts whose reduced cost exceeds that slack.

Deterministic: each search runs on one worker under a deterministic time limit (the wall
clock is a guard only); two run at once on two threads (SEARCHES), and which answer is taken
does not depend on which ends first (_run_all), except among answers worth only the starting
plan's value (``at_least``), which pattern_master.improve discards: it keeps its plan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ortools.sat.python import cp_model

from gpu_sharing.planner.patterns import Pattern, Space

SEARCHES = ({"search_branching": cp_model.LP_SEARCH, "random_seed": 1}, {})
"""CP-SAT settings of the searches that run at once over the same model, one thread each
(MIP_SEARCHES of them; the first leads, _run_all): branching on the LP solution with seed 1,
and CP-SAT's default search. Why two: on one worker within its deterministic time CP-SAT
often stops 1-5 short of what it finds with 20x the time (seed 1's 19 shares MIPs: 5,154
placed priority at 0.15 s, 5,172 at 3 s), and two different searches reach most of that in
the same wall time on two cores. Measured on 240 MIPs of the benchmark's families (seeds
1-4): the pair placed +67 over the default search alone in 39 MIPs, less in none; LP
branching alone +38 -12; other seeds of the default search as many wins as losses; other
partners of the default search (PSEUDO_COST, lb-tree search, quick restarts, LP branching
with linearization 1 or seeds 2-3) less. Why LP branching leads: it proves optimality
sooner (156 of those 240 MIPs against 136), so the pair stops sooner. Over the whole planner
(benchmarks/planner_knobs.py, seeds 1-12, 1,200 fresh plans against the default search
alone): +142 placed priority in 83 plans, -11 in 11; p50 cpx 74 -> 61 ms, shares 310 -> 285,
pinned-tp 174 -> 136 (docs/planner-benchmark.md, session 8)."""
MIP_SEARCHES = 2
"""How many of SEARCHES run (1: the leader alone, one core)."""


@dataclass(frozen=True)
class Solved:
    layouts: dict
    counts: dict
    instances: dict
    placed: int
    optimal: bool
    """CP-SAT proved nothing over these columns places more (at most ``at_most``)."""


def solve_integer(space: Space, columns: list[tuple[int, Pattern]], hint: dict, at_least: int, at_most: int,
                  deterministic_s: float, guard_s: float, barred: set = frozenset()) -> Solved | None:
    """Integer counts of the layouts, columns and instances (CP-SAT, one worker, limited in
    deterministic time): the most placed priority, at least ``at_least`` (the starting plan,
    given as ``hint``), at most ``at_most``. ``barred``: layouts (kind, mode) no such plan
    uses. None when no such plan is found."""
    m = cp_model.CpModel()
    w = {}
    capterms = {t: [] for t in range(len(space.types))}
    for q, kind in enumerate(space.kinds):
        vs = []
        for li, parts in enumerate(kind.parts):
            w[q, li] = v = m.NewIntVar(0, 0 if (q, li) in barred else len(kind.gpus), "")
            vs.append(v)
            for t, count in parts:
                capterms[t].append(-count * v)
        m.Add(sum(vs) == len(kind.gpus))
    x = {(t, p): m.NewIntVar(0, space.most(t), "") for t, p in columns}
    linkterms: dict[tuple[int, int], list] = {}
    for (t, p), v in x.items():
        capterms[t].append(v)
        for ci, a in p:
            linkterms.setdefault((ci, space.types[t].hive), []).append(-a * v)
    for t, terms in capterms.items():
        if terms:
            m.Add(sum(terms) <= 0)
    n = {}
    for (ci, h), terms in sorted(linkterms.items()):
        c = space.classes[ci]
        n[ci, h] = m.NewIntVar(0, space.demands[c.demand_index].replicas, "")
        m.Add(c.tp * n[ci, h] + sum(terms) <= 0)
    for (t, p), v in x.items():
        h = space.types[t].hive
        spread = [(ci, a) for ci, a in p if a >= 2 and space.classes[ci].tp >= 2]
        if spread:
            used = m.NewBoolVar("")
            m.Add(v == 0).OnlyEnforceIf(used.Not())
            for ci, a in spread:
                m.Add(n[ci, h] >= a).OnlyEnforceIf(used)
    for i, d in enumerate(space.demands):
        mine = [v for (ci, _h), v in n.items() if space.classes[ci].demand_index == i]
        if len(mine) > 1:
            m.Add(sum(mine) <= d.replicas)
    obj = sum(space.classes[ci].weight * v for (ci, _h), v in n.items())
    m.Add(obj >= at_least)
    m.Add(obj <= at_most)
    m.Maximize(obj)
    for name, vars_ in (("w", w), ("x", x), ("n", n)):
        for k, v in vars_.items():
            m.AddHint(v, hint[name].get(k, 0))
    done = _run_all(searches_of(m, deterministic_s, guard_s), at_least)
    if done is None:
        return None
    s, status = done

    def value(vars_: dict) -> dict:
        return {k: s.Value(v) for k, v in vars_.items() if s.Value(v)}
    inst = value(n)
    return Solved(value(w), value(x), inst, sum(space.classes[ci].weight * k for (ci, _h), k in inst.items()),
                  status == cp_model.OPTIMAL)


@dataclass
class _Search:
    """One CP-SAT search of the model (its own copy) and, once run, its status."""

    model: cp_model.CpModel
    solver: cp_model.CpSolver
    status: int = cp_model.UNKNOWN


def searches_of(model: cp_model.CpModel, deterministic_s: float, guard_s: float) -> list[_Search]:
    """The MIP_SEARCHES searches of SEARCHES over ``model`` (the leader on it, each other on its
    own copy), as solve_integer runs them (benchmarks/pattern_mips.py runs them the same way)."""
    return [_search(model if i == 0 else model.clone(), setting, deterministic_s, guard_s)
            for i, setting in enumerate(SEARCHES[:max(1, MIP_SEARCHES)])]


def _search(model: cp_model.CpModel, setting: dict, deterministic_s: float, guard_s: float) -> _Search:
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.max_deterministic_time = deterministic_s
    s.parameters.max_time_in_seconds = guard_s  # a guard only, far above (measured: wall <= 9x det under load)
    s.parameters.linearization_level = 2  # the LP over the columns is what closes the gap
    s.parameters.random_seed = setting.get("random_seed", 0)
    if "search_branching" in setting:
        s.parameters.search_branching = setting["search_branching"]
    return _Search(model, s)


def _run_all(searches: list[_Search], at_least: float | None = None) -> tuple[cp_model.CpSolver, int] | None:
    """Run the searches at once, one thread each (CP-SAT releases the GIL while it solves),
    and take the best. The first search leads: when it settles (proves its value optimal over
    these columns, or that nothing reaches ``at_least``), the others stop and it is the
    answer. Another search settles too, but only when it proves that nothing beats
    ``at_least`` (the starting plan's value, which the hint reaches): then every search's
    answer is worth exactly ``at_least``, the caller keeps its plan whichever is returned, and
    the leader need not run to its limit (measured on seed 1's 64 captured MIPs,
    benchmarks/pattern_mips.py: cpx 2's leader ran 296 ms where the default search proved this
    in 15 ms). Otherwise the leader ran to its limit, no search was stopped, and the answer is
    the highest value, the first search on a tie. Each search is deterministic, so the answer's
    value is too, whatever the machine's load and whichever thread ends first; its assignment
    differs only when that value is ``at_least``. (A rule that let any search's proof of a
    higher value stop the others would not be: which of two searches proving the same value
    ends first in wall time depends on the load, and their plans differ.)"""
    settled = threading.Event()
    floor: list[int] = []  # a search other than the leader that proved nothing beats at_least

    def stop_all_but(i: int) -> None:
        settled.set()
        for j, other in enumerate(searches):
            if j != i:
                other.solver.stop_search()

    def run(i: int) -> None:
        if settled.is_set():  # another search settled before this one started: nothing to do
            return
        searches[i].status = searches[i].solver.Solve(searches[i].model)
        if i == 0 and searches[0].status in (cp_model.OPTIMAL, cp_model.INFEASIBLE):
            stop_all_but(0)
        elif (i and at_least is not None and searches[i].status == cp_model.OPTIMAL
              and searches[i].solver.ObjectiveValue() <= at_least):
            floor.append(i)
            stop_all_but(i)
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(searches))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    lead = searches[0]
    if lead.status in (cp_model.OPTIMAL, cp_model.INFEASIBLE):
        return (lead.solver, lead.status) if lead.status == cp_model.OPTIMAL else None
    if floor:  # nothing beats the start: the caller keeps its plan
        return searches[floor[0]].solver, cp_model.OPTIMAL
    found = [sr for sr in searches if sr.status in (cp_model.OPTIMAL, cp_model.FEASIBLE)]
    if not found:
        return None
    best = max(found, key=lambda sr: sr.solver.ObjectiveValue())  # max keeps the first of equals
    return best.solver, best.status
