"""Column generation over partition patterns, then a MIP over the columns (pure).

Why: the layout search (layout_search.py) packs the knapsack's choice greedily, and where it
leaves a gap to the knapsack bound (every cpx case of the benchmark, most pinned-tp and
shares cases: 0.3-3.4% short of the optimum) the better plan is a matter of which partitions
hold which ranks (patterns.py). The linear program over patterns is small (a row per GPU
kind, per partition type, per (class, hive) and per model, whatever the number of GPUs)
and its prices say which ranks are worth room: the pricing step (patterns.price) finds the
pattern that earns most at those prices and adds it while it earns more than its partition
type costs. Layouts are counts per GPU kind in the same LP, so a better plan may also change
modes among each GPU's candidates. Then a MIP (CP-SAT) picks integer counts among the
generated columns, hinted with the plan it started from (whose patterns are columns), so it
never does worse; the counts decode into named instances (patterns.to_packing) and the plan
is checked (patterns.valid) before it replaces anything. The LP solution rounded down and
completed by the final fill comes first: when it reaches the bound, no MIP is built.

The LP also bounds the optimum over the candidate modes: at the last prices no partition
earns more than its type's best reduced cost, so LP value + the most a GPU kind's partitions
could earn over their price is an upper bound (Lagrangian; exact pricing makes it the LP
value). When the candidates are every layout the full set allows, planner.py uses it to
tighten the reported gap.

Deterministic: a counted number of rounds, GLOP's simplex, CP-SAT on one worker with a
deterministic time limit (its wall clock is a guard only, exact.WALL_GUARD_FACTOR above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ortools.linear_solver import pywraplp

from gpu_sharing.planner import exact
from gpu_sharing.planner.fill import placed_weight
from gpu_sharing.planner.packing import Packing, build_slots
from gpu_sharing.planner.patterns import (Pattern, Space, assign_modes, build_space, complete, patterns_of,
                                         to_packing, type_index, valid)
from gpu_sharing.planner.pattern_mip import solve_integer
from gpu_sharing.planner.pricing import price
from gpu_sharing.planner.types import PlannerPolicy

MAX_ROUNDS = 60
"""Pricing rounds at most (each: one LP solve and one pricing per partition type). Measured
on the benchmark's auto, cpx, pinned-tp and shares families (seeds 1-12, 165 runs of this
step, fresh plans and re-plans): 21-25 rounds at the median, at most 48; every auto, cpx and
pinned-tp run converges within 41 (an exact LP bound), the shares runs stop on
MAX_PRICING_CELLS first. At 30, 23 of those 114 runs stopped before converging; 60 placed
+11 priority in 6 of 240 fresh plans and -3 in 2 (benchmarks/planner_knobs.py, seeds 1-12;
docs/planner-benchmark.md, session 7)."""
MAX_PRICING_CELLS = 40_000_000
"""Pricing table cells computed at most: the counted work of the pricing, which dominates the
step (60-200 million cells a second on the 2-core development machine, so at most about
0.2-0.7 s). The benchmark's cpx and pinned-tp cases need 1-5 million; its shares cases
(8 partition types, 21 share rows) 17-55 million to converge, and lose 0-2 placed priority
at this limit."""
MIN_BUDGET_S = 1.0
"""Below this time budget the step does not run: its fixed work (MAX_ROUNDS, MAX_PRICING_CELLS
and MIP_DETERMINISTIC_S) takes 0.05-0.7 s on the 2-core development machine."""
MIP_DETERMINISTIC_S = 0.15
"""CP-SAT's deterministic time for the MIP over the columns, the same whatever the budget
below THOROUGH_BUDGET_S (so the budget does not change the plan; 0.2-0.3 s of wall time at
most on the 2-core development machine, far inside the default 2 s). Measured with benchmarks/planner_knobs.py
on the benchmark's auto, cpx, shares and pinned-tp families (docs/planner-benchmark.md,
session 7): from 0.1, 0.15 placed +20 priority in 12 of 240 fresh plans on seeds 1-12 and
+29 in 12 of 240 on seeds 13-24, less in none, for +0-16% p50 and +20-30% p95 of plan()'s
time in those families; 0.2 gained more on pinned tp (+27 in 12 cases, seeds 1-12) for +40-60%
p95; 0.05 lost 1-2 in 5 of 120 (seeds 1-6). SCIP over the same model (no presolve, no cuts)
at 100 nodes took as long as 0.1 and lost on 2 of the shares cases."""
THOROUGH_BUDGET_S = 10.0
"""From this PlannerPolicy.time_budget_s up, the step is thorough: exact pricing tables
(THOROUGH_TABLE_CELLS), THOROUGH_FACTOR times the pricing cells and CP-SAT's deterministic
time. Below it the limits above hold whatever the budget, so the default budget's plans do
not depend on it. Why a step and not a scale: partly finer tables placed less on shares
(pricing.MAX_TABLE_CELLS 8192: -9 on seeds 1-12), exact tables with 5x the CP-SAT time placed
more (+18 in 8 of the 20 shares cases of seed 1, +6 in 3 of 20 pinned-tp cases of seeds 1-4,
less in none; p50 0.6 s, p95 1.2 s: docs/planner-benchmark.md, session 7), so the budget
chooses between the two measured settings."""
THOROUGH_FACTOR = 5
THOROUGH_TABLE_CELLS = 200_000
"""Cells of one pricing table when thorough: every table of the benchmark's families is then
exact (no byte rounding; shares stay exact to MAX_SHARE_CELLS steps)."""
EPS = 1e-6


@dataclass(frozen=True)
class Improved:
    modes: dict | None
    packing: Packing | None
    """A checked plan placing more than the starting one, or None."""
    bound: float | None
    """Upper bound on placed priority over the candidate modes (None: no full round of
    pricing gave one before the work ran out)."""
    rounds: int
    columns: int


class _Master:
    """The LP. w[q, l]: GPUs of kind q in mode l; x[t, p]: partitions of type t filled with
    pattern p; n[c, h]: instances of class c in hive h. max sum(weight x n) s.t. per kind
    sum_l w = GPUs; per type sum_p x <= partitions the modes give; per (c, h) tp x n <= ranks
    the patterns give; per model sum n <= replicas. Every row is a constraint (no variable
    upper bounds), so the duals alone price a column."""

    def __init__(self, space: Space, table_cells: int | None = None):
        self.space = space
        self.table_cells = table_cells
        """Cells of one pricing table (pricing.price; None: its MAX_TABLE_CELLS)."""
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
        self.work = 0
        """Pricing table cells computed so far (patterns.price): the counted work."""

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


def generate(space: Space, seeds: list[tuple[int, Pattern]], known: int = 0, max_rounds: int = MAX_ROUNDS,
             max_pricing_cells: int = MAX_PRICING_CELLS, table_cells: int | None = None):
    """Column generation from ``seeds``: (master, LP value, bound, rounds). With exact pricing
    each round gives a Lagrangian bound too, and it stops as soon as that bound reaches
    ``known`` (a plan that places that much exists: nothing better is left to find).
    (Stopping as soon as the bound's integer part is the LP value's was measured: fewer
    columns, and the MIP then missed the optimum on a cpx case.)"""
    master = _Master(space, table_cells)
    for t, p in seeds:
        master.add(t, p)
    for t, pt in enumerate(space.types):  # one greedy column per type at the weights per byte
        master.add(t, complete(space, t, (), {ci: space.classes[ci].weight / space.classes[ci].tp
                                              for ci in pt.admits}))
    value, bound, rounds = _grow(master, max_rounds, known, max_pricing_cells)
    return master, value, bound, rounds


def _grow(master: _Master, max_rounds: int, known: int, max_pricing_cells: int) -> tuple[float, float | None, int]:
    """Pricing rounds until no column earns more than its type's price, or the bound reaches
    ``known``, or the counted work (``max_rounds``, ``max_pricing_cells`` of pricing tables) runs out:
    (LP value, bound, rounds). A round prices the types of the modes the LP uses first and
    the others only when those give no column; only full rounds give a bound. The master's
    last solve is of its final columns (for master.rounded)."""
    space = master.space
    rounds, bound = 0, float("inf")
    while True:
        rounds += 1
        solved = master.solve()
        if solved is None:
            return 0.0, None, rounds
        value, pi, mu = solved
        if rounds > max_rounds or master.work > max_pricing_cells:  # out of counted work: a full round's bound, if any
            return value, (bound if bound < float("inf") else None), rounds
        gain: dict[int, float] = {}
        exact = True
        for group in _by_use(master):  # the types of the modes the LP uses first: most columns come from them
            for t in group:
                prices = _prices(space, t, mu)
                best, pattern, ok, cells = price(space, t, prices, table_cells=master.table_cells)
                master.work += cells
                exact = exact and ok
                gain[t] = max(0.0, best - pi[t])
                if best > pi[t] + EPS:
                    master.add(t, complete(space, t, pattern, prices))
            if any(g > EPS for g in gain.values()):
                break
        if len(gain) < len(space.types):
            continue  # a partial round: no bound from it
        if exact:
            bound = min(bound, value + _most_gain(space, [gain[t] for t in range(len(space.types))]))
        if all(g <= EPS for g in gain.values()) or (exact and int(bound + EPS) <= known):
            if exact:  # nothing better than the known plan exists, or no column earns more than its price
                master.solve()  # its solution, for rounded(), is of the columns it has now
                return value, bound, rounds
            return value, _lagrange(space, value, pi, mu, master.table_cells), rounds


def _by_use(master: _Master) -> list[list[int]]:
    """Partition types in two groups: those of the modes the LP solution uses, then the rest."""
    space = master.space
    used = {t for (q, li), v in master.w.items() if v.solution_value() > EPS for t, _n in space.kinds[q].parts[li]}
    return [sorted(used), sorted(set(range(len(space.types))) - used)]


def _most_gain(space: Space, gain: list[float]) -> float:
    """The most the node's partitions could earn over their types' prices, each GPU kind in
    its best mode for that."""
    return sum(len(kind.gpus) * max(sum(n * gain[t] for t, n in parts) for parts in kind.parts)
               for kind in space.kinds)


def _lagrange(space: Space, value: float, pi: list[float], mu, table_cells: int | None) -> float:
    """LP value + the most the partitions could earn over their prices (pricing with sizes
    rounded down: an upper bound when the pricing was not exact)."""
    return value + _most_gain(space, [max(0.0, price(space, t, _prices(space, t, mu), up=False,
                                                     table_cells=table_cells)[0] - pi[t])
                                      for t in range(len(space.types))])


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


def _offer(master: _Master, near: Sequence[Packing]) -> None:
    """The patterns of ``near`` plans as columns, after the column generation (which they do
    not steer) and before the MIP. Why: the LP's columns are chosen for the LP, and the MIP
    over them often cannot combine them into a better integer plan (pinned-tp cases of the
    benchmark: the best plan over the columns is the starting one, the LP bound 1-6 higher);
    the layout search's other packings are whole integer plans, and their partitions' patterns
    fit together by construction. Measured against the columns alone (docs/planner-benchmark.md,
    session 9). The LP is solved again over them: the rounding and the reduced-cost filter read
    its solution."""
    columns = set()
    for other in near:
        for ref, pattern in patterns_of(master.space, other).items():
            t = type_index(master.space, other.slots[ref])
            if t is not None:
                columns.add((t, pattern))
    added = [key for key in sorted(columns) if master.add(*key)]  # in a fixed order: the MIP's search follows it
    if added:
        master.solve()


def every_layout(full, candidates: dict[int, list]) -> bool:
    """Whether ``candidates`` (compute modes at fixed memory modes) are every layout the full
    feasible set (``full``: problem.Problem) allows: then the LP bound bounds the whole problem."""
    return all({lay.compute for lay in g.layouts} <= set(candidates[g.gpu])
               and len({lay.memory for lay in g.layouts}) == 1 for g in full.gpus)


def limits(policy: PlannerPolicy) -> tuple[float, int, int | None]:
    """(CP-SAT's deterministic s, pricing cells, cells of one pricing table or None for
    pricing's own) for this budget: the defaults, or thorough ones (THOROUGH_BUDGET_S)."""
    if policy.time_budget_s >= THOROUGH_BUDGET_S:
        return (MIP_DETERMINISTIC_S * THOROUGH_FACTOR, MAX_PRICING_CELLS * THOROUGH_FACTOR, THOROUGH_TABLE_CELLS)
    return MIP_DETERMINISTIC_S, MAX_PRICING_CELLS, None


def improve(inventory, demands, policy: PlannerPolicy, specs, candidates, modes, packing: Packing,
            bound: int, near: Sequence[Packing] = ()) -> Improved:
    """A better plan than ``packing`` (at ``modes``), each GPU in one of its ``candidates``
    modes, and the LP bound over those modes. Nothing when the budget is below
    MIN_BUDGET_S (the work here does not scale with the budget: limits()). ``near``: other
    plans at those modes placing almost as much (layout_search.Found.near); their patterns
    join the columns after the column generation (_offer)."""
    if policy.time_budget_s < MIN_BUDGET_S:
        return Improved(None, None, None, 0, 0)
    placed = placed_weight(packing)
    space = build_space(inventory, demands, policy, specs, candidates)
    start = _start(space, modes, packing)
    mip_s, pricing_cells, table_cells = limits(policy)
    master, _value, lp_bound, rounds = generate(space, sorted(start["x"]), placed, max_pricing_cells=pricing_cells,
                                                table_cells=table_cells)
    _offer(master, near)
    at_most = bound if lp_bound is None else min(bound, int(lp_bound + EPS))
    best = None
    if at_most > placed:
        quick = _decode(space, inventory, specs, policy, modes, *master.rounded())
        if quick is not None and placed_weight(quick[1]) > placed:
            best, placed = quick, placed_weight(quick[1])
            start = _start(space, *quick)  # the MIP starts from the better plan: its patterns become columns
            for key in start["x"]:
                master.add(*key)
    if at_most > placed:
        solved = master.solve()
        slack = (solved[0] if solved else 0.0) - (placed + 1) + EPS  # what a better plan may lose to reduced costs
        useful = sorted(key for key, v in master.x.items() if abs(v.reduced_cost()) <= slack or key in start["x"])
        barred = {key for key, v in master.w.items() if abs(v.reduced_cost()) > slack and not start["w"].get(key)}
        found = solve_integer(space, useful, start, placed, at_most, mip_s,
                              exact.WALL_GUARD_FACTOR * max(mip_s, policy.time_budget_s / 4),
                              barred) if slack >= 0 else None
        if found is not None and found.placed > placed:
            out = _decode(space, inventory, specs, policy, modes, found.layouts, found.counts, found.instances)
            if out is not None and placed_weight(out[1]) > placed:
                best = out
    return Improved(best[0] if best else None, best[1] if best else None, lp_bound, rounds, len(master.x))
