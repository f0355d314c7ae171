"""Column generation over partition patterns at fixed layouts, then a MIP over the columns (pure).

Why: the layout search (layout_search.py) packs greedily, and where it leaves a gap to the
knapsack bound a better plan is usually a matter of which partitions hold which ranks
(patterns.py), not of layouts. The linear program over patterns is small (one row per
partition type, per (class, hive) and per model) and its prices say which ranks are worth
room: the pricing step (patterns.price) finds the pattern that earns most at those prices,
and adds it while it earns more than its partition type costs. Then a MIP (CP-SAT) picks
integer counts among the generated columns and the plan it started from, so it never does
worse than that plan; the counts decode into named instances (patterns.to_packing) and the
plan is checked (patterns.valid) before it replaces anything.

The LP also bounds the optimum at these layouts: at the last prices, no partition earns more
than the best pattern's reduced cost, so LP value + sum(partitions x best reduced cost) is an
upper bound (Lagrangian). When every GPU has one layout only (pinned modes), that bound holds
for the whole problem and may tighten the reported gap.

Deterministic: a counted number of rounds, GLOP's simplex, CP-SAT on one worker with a
deterministic time limit (its wall clock is a guard only, exact.WALL_GUARD_FACTOR above).
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from gpu_sharing.planner.exact import WALL_GUARD_FACTOR
from gpu_sharing.planner.fill import placed_weight
from gpu_sharing.planner.packing import Packing
from gpu_sharing.planner.packing import build_slots
from gpu_sharing.planner.patterns import (Pattern, Space, assign_modes, build_space, complete, patterns_of, price,
                                         to_packing, type_index, valid)
from gpu_sharing.planner.types import PlannerPolicy

MAX_ROUNDS = 40
"""Pricing rounds at most (each: one LP solve and one pricing per partition type)."""
MIP_NODES = 200
"""Branch-and-bound nodes SCIP may spend on the MIP over the columns."""
EPS = 1e-6


@dataclass(frozen=True)
class Improved:
    modes: dict | None
    packing: Packing | None
    """A checked plan placing more than the starting one, or None."""
    bound: float | None
    """Upper bound on placed priority at these layouts (None: the pricing was not exact)."""
    rounds: int
    columns: int


class _Master:
    """The LP. w[q, l]: GPUs of kind q in mode l; x[t, p]: partitions of type t filled with
    pattern p; n[c, h]: instances of class c in hive h. max sum(weight x n) s.t. per kind
    sum_l w = GPUs; per type sum_p x <= partitions the modes give; per (c, h) tp x n <= ranks
    the patterns give; per model sum n <= replicas. Every row is a constraint (no variable
    upper bounds), so the duals alone price a column."""

    def __init__(self, space: Space):
        self.space = space
        s = self.s = pywraplp.Solver.CreateSolver("GLOP")
        inf = s.infinity()
        self.cap = [s.Constraint(-inf, 0) for _t in space.types]
        self.w: dict[tuple[int, int], pywraplp.Variable] = {}
        for q, kind in enumerate(space.kinds):
            row = s.Constraint(len(kind.gpus), len(kind.gpus))
            for li, parts in enumerate(kind.parts):
                self.w[q, li] = v = s.NumVar(0, inf, "")
                row.SetCoefficient(v, 1)
                for t, count in parts:
                    self.cap[t].SetCoefficient(v, -count)
        self.link: dict[tuple[int, int], pywraplp.Constraint] = {}
        self.n: dict[tuple[int, int], pywraplp.Variable] = {}
        reps = {i: s.Constraint(-inf, d.replicas) for i, d in enumerate(space.demands)}
        objective = s.Objective()
        for ci, h in sorted({(ci, t.hive) for t in space.types for ci in t.admits}):
            c = space.classes[ci]
            self.link[ci, h] = con = s.Constraint(-inf, 0)
            self.n[ci, h] = v = s.NumVar(0, inf, "")
            con.SetCoefficient(v, c.tp)
            reps[c.demand_index].SetCoefficient(v, 1)
            objective.SetCoefficient(v, c.weight)
        objective.SetMaximization()
        self.x: dict[tuple[int, Pattern], pywraplp.Variable] = {}

    def add(self, t: int, pattern: Pattern) -> bool:
        if (t, pattern) in self.x or not pattern:
            return False
        v = self.x[t, pattern] = self.s.NumVar(0, self.s.infinity(), "")
        self.cap[t].SetCoefficient(v, 1)
        for ci, a in pattern:
            self.link[ci, self.space.types[t].hive].SetCoefficient(v, -a)
        return True

    def rounded(self):
        """The LP solution rounded down: GPUs per mode (the rest to the first mode that has room
        for the rounded patterns), whole partitions per pattern, and the instances their ranks
        carry (the LP's, rounded down, within the ranks the rounded patterns give)."""
        layouts = {key: int(v.solution_value() + EPS) for key, v in self.w.items()}
        for q, kind in enumerate(self.space.kinds):
            short = len(kind.gpus) - sum(layouts.get((q, li), 0) for li in range(len(kind.modes)))
            if short > 0:
                li = max(range(len(kind.modes)), key=lambda li: (self.w[q, li].solution_value() % 1, -li))
                layouts[q, li] += short
        counts = {key: int(v.solution_value() + EPS) for key, v in self.x.items()}
        counts = {key: k for key, k in counts.items() if k}
        inst = {}
        for (ci, h), v in self.n.items():
            ranks = sum(a * k for (t, p), k in counts.items() for cc, a in p
                        if cc == ci and self.space.types[t].hive == h)
            inst[ci, h] = min(int(v.solution_value() + EPS), ranks // self.space.classes[ci].tp)
        return layouts, counts, inst

    def solve(self) -> tuple[float, list[float], dict[tuple[int, int], float]] | None:
        """(LP value, price of a partition per type, price of a rank per (class, hive))."""
        if self.s.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        pi = [abs(con.dual_value()) for con in self.cap]
        mu = {key: abs(con.dual_value()) for key, con in self.link.items()}
        return self.s.Objective().Value(), pi, mu


def _prices(space: Space, t: int, mu: dict[tuple[int, int], float]) -> dict[int, float]:
    h = space.types[t].hive
    return {ci: mu.get((ci, h), 0.0) for ci in space.types[t].admits}


def generate(space: Space, seeds: list[tuple[int, Pattern]], max_rounds: int = MAX_ROUNDS):
    """Column generation from ``seeds``: (master, LP value, bound, rounds); the master's last
    solve is of its final columns (for master.rounded)."""
    master = _Master(space)
    for t, p in seeds:
        master.add(t, p)
    for t, pt in enumerate(space.types):  # one greedy column per type at the weights per byte
        master.add(t, complete(space, t, (), {ci: space.classes[ci].weight / space.classes[ci].tp
                                              for ci in pt.admits}))
    rounds = 0
    while True:
        rounds += 1
        solved = master.solve()
        if solved is None:
            return master, 0.0, None, rounds
        value, pi, mu = solved
        if rounds > max_rounds:
            return master, value, _lagrange(space, value, pi, mu), rounds
        added, exact = False, True
        for t in range(len(space.types)):
            prices = _prices(space, t, mu)
            best, pattern, ok = price(space, t, prices)
            exact = exact and ok
            if best > pi[t] + EPS:
                added |= master.add(t, complete(space, t, pattern, prices))
        if not added:
            return master, value, value if exact else _lagrange(space, value, pi, mu), rounds


def _lagrange(space: Space, value: float, pi: list[float], mu) -> float:
    """LP value + what the best pattern of each type earns over its price, on every partition
    the modes could give (sizes rounded down in the pricing: an upper bound)."""
    gain = [max(0.0, price(space, t, _prices(space, t, mu), up=False)[0] - pi[t]) for t in range(len(space.types))]
    return value + sum(len(kind.gpus) * max(sum(n * gain[t] for t, n in parts) for parts in kind.parts)
                       for kind in space.kinds)


def solve_integer(space: Space, columns: list[tuple[int, Pattern]], hint: dict, at_least: int, at_most: int,
                  nodes: int, guard_s: float):
    """Integer counts of the columns (SCIP, at most ``nodes`` branch-and-bound nodes): the most
    placed priority, at least ``at_least`` (the starting plan: ``hint``), at most ``at_most``.
    A partition holding a ranks of a tp>1 class needs a instances of it (each rank is a
    different instance). Returns (layout counts, pattern counts, instances, placed) or None."""
    s = pywraplp.Solver.CreateSolver("SCIP")
    if s is None:
        return None
    inf = s.infinity()
    cap = [s.Constraint(-inf, 0) for _t in space.types]
    w = {}
    for q, kind in enumerate(space.kinds):
        row = s.Constraint(len(kind.gpus), len(kind.gpus))
        for li, parts in enumerate(kind.parts):
            w[q, li] = v = s.IntVar(0, len(kind.gpus), "")
            row.SetCoefficient(v, 1)
            for t, count in parts:
                cap[t].SetCoefficient(v, -count)
    x = {(t, p): s.IntVar(0, space.most(t), "") for t, p in columns}
    n, link = {}, {}
    for ci, h in sorted({(ci, space.types[t].hive) for t, p in columns for ci, _a in p}):
        c = space.classes[ci]
        n[ci, h] = s.IntVar(0, space.demands[c.demand_index].replicas, "")
        link[ci, h] = s.Constraint(-inf, 0)
        link[ci, h].SetCoefficient(n[ci, h], c.tp)
    reps = {i: s.Constraint(-inf, d.replicas) for i, d in enumerate(space.demands)}
    for (ci, _h), v in n.items():
        reps[space.classes[ci].demand_index].SetCoefficient(v, 1)
    for (t, p), v in x.items():
        h = space.types[t].hive
        cap[t].SetCoefficient(v, 1)
        for ci, a in p:
            link[ci, h].SetCoefficient(v, -a)
        spread = [(ci, a) for ci, a in p if a >= 2 and space.classes[ci].tp >= 2]
        if spread:  # v > 0 needs ``used``, and ``used`` needs a instances
            used = s.BoolVar("")
            s.Add(v <= space.most(t) * used)
            for ci, a in spread:
                s.Add(n[ci, h] >= a * used)
    objective = s.Objective()
    total = s.Constraint(at_least, at_most)
    for (ci, _h), v in n.items():
        objective.SetCoefficient(v, space.classes[ci].weight)
        total.SetCoefficient(v, space.classes[ci].weight)
    objective.SetMaximization()
    given = [(v, hint["w"].get(k, 0)) for k, v in w.items()] + [(v, hint["x"].get(k, 0)) for k, v in x.items()] + [
        (v, hint["n"].get(k, 0)) for k, v in n.items()]
    s.SetHint([v for v, _a in given], [float(a) for _v, a in given])
    # a deterministic limit decides; the wall clock is only a guard far above it
    s.SetSolverSpecificParametersAsString(f"limits/totalnodes = {nodes}\n")
    s.SetTimeLimit(max(1000, int(WALL_GUARD_FACTOR * guard_s * 1000)))
    if s.Solve() not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None

    def value(vars_: dict) -> dict:
        return {k: int(round(v.solution_value())) for k, v in vars_.items() if round(v.solution_value())}
    inst = value(n)
    return value(w), value(x), inst, sum(space.classes[ci].weight * k for (ci, _h), k in inst.items())


def _start(space: Space, modes, packing: Packing) -> dict:
    """The starting plan in the master's terms (seed columns and the MIP's hint)."""
    index = {(space.demands[c.demand_index].name, c.tp): ci for ci, c in enumerate(space.classes)}
    w = {}
    for q, kind in enumerate(space.kinds):
        for g in kind.gpus:
            li = kind.modes.index(modes[g])
            w[q, li] = w.get((q, li), 0) + 1
    x: dict[tuple[int, Pattern], int] = {}
    for ref, p in sorted(patterns_of(space, packing).items()):
        key = (type_index(space, packing.slots[ref]), p)
        x[key] = x.get(key, 0) + 1
    n: dict[tuple[int, int], int] = {}
    for a in packing.assignments.values():
        key = (index[a.item.model, a.tp], packing.slots[a.refs[0]].hive)
        n[key] = n.get(key, 0) + 1
    return {"w": w, "x": x, "n": n}


def _decode(space: Space, inventory, specs, policy: PlannerPolicy, modes, layouts, counts, inst):
    """(modes, checked packing) from integer counts, or None."""
    chosen = assign_modes(space, layouts, modes)
    if chosen is None:
        return None
    slots = build_slots(inventory, {**modes, **chosen}, specs, policy)
    out = to_packing(space, slots, counts, inst, policy)
    if out is None or not valid(space, out):
        return None
    return {**modes, **chosen}, out


def improve(inventory, demands, policy: PlannerPolicy, specs, candidates, modes, packing: Packing,
            bound: int) -> Improved:
    """A better plan than ``packing`` (at ``modes``), each GPU in one of its ``candidates``
    modes, and the LP bound over those modes."""
    placed = placed_weight(packing)
    space = build_space(inventory, demands, policy, specs, candidates)
    start = _start(space, modes, packing)
    master, _value, lp_bound, rounds = generate(space, sorted(start["x"]))
    at_most = bound if lp_bound is None else min(bound, int(lp_bound + EPS))
    best = None
    if at_most > placed:
        quick = _decode(space, inventory, specs, policy, modes, *master.rounded())
        if quick is not None and placed_weight(quick[1]) > placed:
            best, placed = quick, placed_weight(quick[1])
    if at_most > placed:
        found = solve_integer(space, sorted(master.x), start, placed, at_most, MIP_NODES, policy.time_budget_s)
        if found is not None and found[3] > placed:
            out = _decode(space, inventory, specs, policy, modes, *found[:3])
            if out is not None and placed_weight(out[1]) > placed:
                best = out
    return Improved(best[0] if best else None, best[1] if best else None, lp_bound, rounds, len(master.x))
