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

Deterministic: one worker, a deterministic time limit; the wall clock is a guard only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from gpu_sharing.planner.patterns import Pattern, Space


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
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.random_seed = 0
    s.parameters.max_deterministic_time = deterministic_s
    s.parameters.max_time_in_seconds = guard_s  # a guard only, far above (measured: wall <= 9x det under load)
    s.parameters.linearization_level = 2  # the LP over the columns is what closes the gap
    status = s.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None

    def value(vars_: dict) -> dict:
        return {k: s.Value(v) for k, v in vars_.items() if s.Value(v)}
    inst = value(n)
    return Solved(value(w), value(x), inst, sum(space.classes[ci].weight * k for (ci, _h), k in inst.items()),
                  status == cp_model.OPTIMAL)
