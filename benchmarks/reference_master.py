"""The reference's linear master (GLOP) and integer master (SCIP), column generation and the
reduced-cost enumeration of columns (benchmarks/reference_colgen.py explains the method).
"""

from __future__ import annotations

import math
import time

from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model
from reference_patterns import (PRICE_SCALE, SHARE_SCALE, Model, _best_pattern, _Collect, _pattern_model, greedy_patterns,
                                pattern_value)

ARTIFICIAL = 10**4
"""Price of an artificial rank (stands in for columns not generated yet)."""


class Master:
    """The linear relaxation over the columns generated so far (GLOP), with its duals."""

    def __init__(self, m: Model):
        self.m = m
        s = self.s = pywraplp.Solver.CreateSolver("GLOP")
        inf = s.infinity()
        self.hives = sorted({t[0] for t in m.types})
        self.n, self.w, self.v, self.lam = {}, {}, {}, {}
        self.ub: dict = {}
        for ci, (i, _tp, _b, _s, _w) in enumerate(m.classes):
            for h in self.hives:
                if any(m.types[k][0] == h for k in m.admit if ci in m.admit[k]):
                    self.n[ci, h] = s.NumVar(0, m.demands[i].replicas, "")
        self.link = {key: s.Constraint(-inf, 0) for key in self.n}
        self.slack = {}
        for (ci, h), var in self.n.items():
            self.link[ci, h].SetCoefficient(var, m.classes[ci][1])
            # artificial ranks at a prohibitive price: a branch's lower bounds never make the
            # restricted LP infeasible for want of columns (which would prune wrongly)
            self.slack[ci, h] = s.NumVar(0, m.classes[ci][1] * m.demands[m.classes[ci][0]].replicas, "")
            self.link[ci, h].SetCoefficient(self.slack[ci, h], -1)
        self.cnt = {k: s.Constraint(-inf, 0) for k in range(len(m.types))}
        self.kind, self.mem, self.one = {}, {}, {}
        for q, kd in enumerate(m.kinds):
            self.kind[q] = s.Constraint(kd["count"], kd["count"])
            for li, (_mem, counts) in enumerate(kd["layouts"]):
                var = self.w[q, li] = s.NumVar(0, kd["count"], "")
                self.kind[q].SetCoefficient(var, 1)
                for k, c in counts.items():
                    self.cnt[k].SetCoefficient(var, -c)
        for h in self.hives:
            modes = sorted({lay[0] for kd in m.kinds if kd["hive"] == h for lay in kd["layouts"]}, key=str)
            if len(modes) < 2:
                continue
            self.one[h] = s.Constraint(1, 1)
            for mu in modes:
                self.v[h, mu] = s.NumVar(0, 1, "")
                self.one[h].SetCoefficient(self.v[h, mu], 1)
            for q, kd in enumerate(m.kinds):
                if kd["hive"] != h:
                    continue
                for mu in modes:
                    row = self.mem[q, mu] = s.Constraint(-inf, 0)
                    row.SetCoefficient(self.v[h, mu], -kd["count"])
                    for li, lay in enumerate(kd["layouts"]):
                        if lay[0] == mu:
                            row.SetCoefficient(self.w[q, li], 1)
        self.rep = {}
        for ci, (i, _tp, _b, _s, _w) in enumerate(m.classes):
            row = self.rep.setdefault(i, s.Constraint(-inf, m.demands[i].replicas))
            for h in self.hives:
                if (ci, h) in self.n:
                    row.SetCoefficient(self.n[ci, h], 1)
        obj = s.Objective()
        for (ci, _h), var in self.n.items():
            obj.SetCoefficient(var, m.classes[ci][4])
        for var in self.slack.values():
            obj.SetCoefficient(var, -ARTIFICIAL)
        obj.SetMaximization()

    def add(self, k: int, pattern: tuple) -> bool:
        """Add a pattern column (no upper bound of its own: the partitions row bounds it, so at
        the LP optimum no existing column has a positive reduced cost). False if it exists."""
        if pattern in self.m.columns.setdefault(k, set()):
            return False
        self.m.columns[k].add(pattern)
        var = self.lam[k, pattern] = self.s.NumVar(0, self.s.infinity(), "")
        self.cnt[k].SetCoefficient(var, 1)
        h = self.m.types[k][0]
        for ci, a in pattern:
            self.link[ci, h].SetCoefficient(var, -a)
        return True

    def solve(self) -> bool:
        """False when the LP is infeasible (only a branch's bounds on layouts or instance
        counts can make it so: artificial ranks stand in for missing columns)."""
        code = self.s.Solve()
        if code == pywraplp.Solver.INFEASIBLE:
            return False
        if code != pywraplp.Solver.OPTIMAL:
            raise RuntimeError(f"reference LP not solved (status {code})")
        return True

    def duals(self):
        """Duals clipped to their valid signs (<= rows: >= 0; = rows: free): any such vector
        gives a valid Lagrangian bound, so GLOP's tolerances cannot make the bound wrong."""
        pos = lambda row: max(0.0, row.dual_value())  # noqa: E731
        return ({key: pos(r) for key, r in self.link.items()}, {k: pos(r) for k, r in self.cnt.items()},
                {q: r.dual_value() for q, r in self.kind.items()}, {key: pos(r) for key, r in self.mem.items()},
                {h: r.dual_value() for h, r in self.one.items()}, {i: pos(r) for i, r in self.rep.items()})

    def reduced_costs(self, y):
        """Reduced costs of the instance, layout and memory-mode variables under duals y."""
        link, cnt, kind, mem, one, rep = y
        m = self.m
        rc_n = {(ci, h): m.classes[ci][4] - m.classes[ci][1] * link[ci, h] - rep[m.classes[ci][0]]
                for (ci, h) in self.n}
        rc_w = {}
        for (q, li), _var in self.w.items():
            mu, counts = m.kinds[q]["layouts"][li]
            rc_w[q, li] = (sum(c * cnt[k] for k, c in counts.items()) - kind[q] - mem.get((q, mu), 0.0))
        rc_v = {(h, mu): m_count - one[h] for (h, mu), m_count in
                ((key, sum(m.kinds[q]["count"] * mem[q, mu2] for (q, mu2) in mem
                           if mu2 == key[1] and m.kinds[q]["hive"] == key[0])) for key in self.v)}
        return rc_n, rc_w, rc_v

    def bound(self, y, best_rc: dict[int, float]) -> float:
        """Lagrangian bound: y.b + the best of each variable's reduced cost times its lower or
        upper bound (a branch's bounds included), patterns not generated included through each
        type's best reduced cost."""
        link, cnt, kind, mem, one, rep = y
        m = self.m
        rc_n, rc_w, rc_v = self.reduced_costs(y)
        total = sum(kind[q] * kd["count"] for q, kd in enumerate(m.kinds)) + sum(one.values())
        total += sum(rep[i] * m.demands[i].replicas for i in rep)
        for rcs, vars_ in ((rc_n, self.n), (rc_w, self.w), (rc_v, self.v)):
            total += sum(max(r * vars_[key].lb(), r * vars_[key].ub()) for key, r in rcs.items())
        total += sum(max(0.0, link[key] - ARTIFICIAL) * var.ub() for key, var in self.slack.items())
        total += sum(max(0.0, r) * m.type_max(k) for k, r in best_rc.items())
        return total


def start_master(m: Model) -> Master:
    master = Master(m)
    for k, cls in m.admit.items():  # start: each class alone, as many ranks as fit
        for ci in cls:
            i, _tp, b, s, _w = m.classes[ci]
            most = min(m.types[k][2] // b, m.demands[i].replicas, SHARE_SCALE // s if s else 10**9,
                       m.types[k][4] // m.cus(k, ci))
            if most:
                master.add(k, ((ci, most),))
    return master


def price(master: Master, deadline: float) -> tuple[tuple | None, dict, float, bool]:
    """Column generation under the master's current bounds: price until no pattern has a
    positive reduced cost. Returns the clipped duals that gave the best Lagrangian bound, their
    best reduced cost per type, that bound (valid at any iteration; -inf when the bounds are
    infeasible), and whether pricing converged."""
    m = master.m
    best = (float("inf"), None, None)
    while True:
        if not master.solve():
            return None, {}, float("-inf"), True
        y = master.duals()
        added = 0
        for k in range(len(m.types)):  # cheap columns first: greedy fillings
            value = pattern_value(y, m, k)
            for pattern in greedy_patterns(m, k, value):
                if sum(n * value[ci] for ci, n in pattern) - y[1][k] > 1e-6:
                    added += master.add(k, pattern)
        if added and time.monotonic() < deadline:
            continue
        best_rc = {}
        for k in range(len(m.types)):  # exact pricing: also the bound on every pattern
            value = pattern_value(y, m, k)
            bound, pattern = _best_pattern(m, k, value)
            best_rc[k] = bound - y[1][k]
            if pattern and sum(n * value[ci] for ci, n in pattern) - y[1][k] > 1e-6:
                added += master.add(k, pattern)
        bound = master.bound(y, best_rc)
        if bound < best[0]:
            best = (bound, y, best_rc)
        if not added or time.monotonic() > deadline:
            return best[1], best[2], best[0], not added


def integer_master(m: Model, columns: dict[int, list[tuple]], at_least: int, time_limit_s: float,
                   bounds: dict | None = None, backend: str = "SCIP"):
    """The exact problem restricted to ``columns`` (SCIP): integer instance, layout and pattern
    counts, one memory mode per hive, and the distinct-partition rule. Returns (status, value,
    solution) with status "infeasible" (nothing >= at_least with these columns), "optimal",
    "feasible" (time out with a solution) or "unknown"."""
    s = pywraplp.Solver.CreateSolver(backend)
    hives = sorted({t[0] for t in m.types})
    n = {}
    for ci, (i, _tp, _b, _s, _w) in enumerate(m.classes):
        for h in hives:
            if any(m.types[k][0] == h and ci in m.admit[k] for k in m.admit):
                n[ci, h] = s.IntVar(0, m.demands[i].replicas, "")
    ranks: dict[tuple, list] = {key: [] for key in n}
    w, vs = {}, {}
    supply: dict[int, list] = {k: [] for k in range(len(m.types))}
    for q, kd in enumerate(m.kinds):
        lays = []
        for li, (mu, counts) in enumerate(kd["layouts"]):
            var = w[q, li] = s.IntVar(0, kd["count"], "")
            lays.append(var)
            for k, c in counts.items():
                supply[k].append(c * var)
        s.Add(sum(lays) == kd["count"])
    for h in hives:
        modes = sorted({lay[0] for kd in m.kinds if kd["hive"] == h for lay in kd["layouts"]}, key=str)
        if len(modes) < 2:
            continue
        v = {mu: s.BoolVar("") for mu in modes}
        vs.update({(h, mu): var for mu, var in v.items()})
        s.Add(sum(v.values()) == 1)
        for q, kd in enumerate(m.kinds):
            if kd["hive"] == h:
                for mu in modes:
                    s.Add(sum(w[q, li] for li, lay in enumerate(kd["layouts"]) if lay[0] == mu) <= kd["count"] * v[mu])
    for (kind, key), (lo, hi) in (bounds or {}).items():
        var = {"n": n, "w": w, "v": vs}[kind].get(key)
        if var is not None:
            var.SetBounds(max(var.lb(), math.ceil(lo - 1e-9)), min(var.ub(), math.floor(hi + 1e-9)))
    lam = {}
    for k, pats in columns.items():
        h = m.types[k][0]
        use = []
        for pattern in pats:
            top = m.type_max(k)
            var = lam[k, pattern] = s.IntVar(0, top, "")
            use.append(var)
            multi = [(ci, a) for ci, a in pattern if a >= 2 and m.classes[ci][1] >= 2]
            if multi:
                u = s.BoolVar("")
                s.Add(var <= top * u)
                for ci, a in multi:
                    s.Add(n[ci, h] >= a * u)
            for ci, a in pattern:
                ranks[ci, h].append(a * var)
        s.Add(sum(use) <= sum(supply[k]))
    for (ci, h), var in n.items():
        s.Add(m.classes[ci][1] * var <= sum(ranks[ci, h]))
    for i in {c[0] for c in m.classes}:
        s.Add(sum(var for (ci, _h), var in n.items() if m.classes[ci][0] == i) <= m.demands[i].replicas)
    total = sum(m.classes[ci][4] * var for (ci, _h), var in n.items())
    s.Add(total >= at_least)
    s.Maximize(total)
    s.SetTimeLimit(int(time_limit_s * 1000))
    s.SetSolverSpecificParametersAsString("limits/gap = 0\nlimits/absgap = 0\n" if backend == "SCIP" else "num_workers:1")
    code = s.Solve()
    if code == pywraplp.Solver.INFEASIBLE:
        return "infeasible", None, None
    if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return "unknown", None, None
    value = int(round(s.Objective().Value()))
    sol = {"n": {key: int(round(v.solution_value())) for key, v in n.items() if v.solution_value() > 0.5},
           "w": {key: int(round(v.solution_value())) for key, v in w.items()},
           "lam": {key: int(round(v.solution_value())) for key, v in lam.items() if v.solution_value() > 0.5}}
    return ("optimal" if code == pywraplp.Solver.OPTIMAL else "feasible"), value, sol


def enumerate_columns(m: Model, master: Master, y, bound: float, target: int, limit: int,
                      deadline: float) -> dict[int, set] | None:
    """Every pattern an integer solution worth >= target can use (see the module docstring,
    step 3): reduced cost + the reduced costs of the instance counts and of the cheapest layout
    it implies >= target - bound. None when more than ``limit`` patterns or out of time."""
    rc_n, rc_w, _rc_v = master.reduced_costs(y)
    need = target - bound
    out: dict[int, set] = {}
    total = 0
    for k in range(len(m.types)):
        h = m.types[k][0]
        # a variable already at >= 1 by the branch's bounds costs nothing more when used
        providers = [min(0.0, rc_w[q, li]) if master.w[q, li].lb() < 0.5 else 0.0
                     for (q, li) in rc_w if m.kinds[q]["layouts"][li][1].get(k) and master.w[q, li].ub() > 0.5]
        if not providers:
            continue
        floor = y[1][k] - max(providers) + need
        penalty = {ci: min(0.0, rc_n[ci, h]) if master.n[ci, h].lb() < 0.5 else 0.0
                   for ci in m.admit[k] if (ci, h) in rc_n}
        model, a, objective, bounds = _pattern_model(m, k, pattern_value(y, m, k), penalty)
        if not a:
            continue
        margin = sum(bounds.values()) + len(a) + 1  # rounding: enumerate a little more, never less
        model.Add(objective >= int(math.floor(floor * PRICE_SCALE)) - margin)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.enumerate_all_solutions = True
        solver.parameters.max_time_in_seconds = max(0.1, deadline - time.monotonic())
        cb = _Collect(a, limit - total + 1)
        code = solver.Solve(model, cb)
        if code not in (cp_model.OPTIMAL, cp_model.INFEASIBLE) or total + len(cb.found) > limit:
            return None  # incomplete: nothing may be concluded from it
        out[k] = {p for p in cb.found if p}
        total += len(out[k])
    return out


def surrogate_bound(master: Master, y, best_rc: dict[int, float], time_limit_s: float = 5.0) -> int:
    """An integer bound from the LP's prices: every pattern of type k is worth at most
    cap_k = sigma_k + best_rc_k at prices y (the exact pricing proved it), and an instance of
    class c needs tp ranks worth tp x y_c, so per hive
        sum_c tp y_c n_c <= sum over GPUs of the best layout's sum_k cap_k x partitions_k,
    and likewise in bytes. Maximising placed priority over integer instance counts under these
    two knapsack constraints (and the branch's bounds) bounds the problem: where the LP bound
    is fractional, this often is not. Coefficients are rounded so the relaxation only widens."""
    m = master.m
    link = y[0]
    cap = {k: max(0.0, y[1][k] + best_rc[k]) for k in best_rc}
    model = cp_model.CpModel()
    n = {}
    for (ci, h), var in master.n.items():
        lo, hi = int(math.ceil(var.lb() - 1e-9)), int(math.floor(var.ub() + 1e-9))
        if hi < lo:
            return -1
        n[ci, h] = model.NewIntVar(lo, hi, "")
    for i in {m.classes[ci][0] for ci, _h in n}:
        model.Add(sum(v for (ci, _h), v in n.items() if m.classes[ci][0] == i) <= m.demands[i].replicas)
    for h in master.hives:
        kinds = [q for q, kd in enumerate(m.kinds) if kd["hive"] == h]
        worth = sum(_best_layouts(master, q, lambda c: sum(cap[k] * x for k, x in c.items())) for q in kinds)
        room = sum(_best_layouts(master, q, lambda c: sum(m.types[k][2] * x for k, x in c.items())) for q in kinds)
        terms = [(m.classes[ci][1] * link[ci, h], m.classes[ci][1] * m.classes[ci][2], v)
                 for (ci, hh), v in n.items() if hh == h]
        model.Add(sum(int(math.floor(a * PRICE_SCALE)) * v for a, _b, v in terms) <= int(math.ceil(worth * PRICE_SCALE)) + 1)
        model.Add(sum(b * v for _a, b, v in terms) <= room)
    model.Maximize(sum(m.classes[ci][4] * v for (ci, _h), v in n.items()))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = time_limit_s
    code = solver.Solve(model)
    if code == cp_model.INFEASIBLE:
        return -1
    return int(math.floor(solver.BestObjectiveBound() + 1e-6))


def _best_layouts(master: Master, q: int, value) -> float:
    """The most ``value`` (of a layout's partition counts) kind q's GPUs reach under the
    branch's bounds on how many take each layout: the lower bounds, then the best layouts."""
    lays = master.m.kinds[q]["layouts"]
    lo = [int(math.ceil(master.w[q, li].lb() - 1e-9)) for li in range(len(lays))]
    hi = [int(math.floor(master.w[q, li].ub() + 1e-9)) for li in range(len(lays))]
    free = master.m.kinds[q]["count"] - sum(lo)
    total = sum(lo[li] * value(lays[li][1]) for li in range(len(lays)))
    for li in sorted(range(len(lays)), key=lambda li: -value(lays[li][1])):
        take = max(0, min(free, hi[li] - lo[li]))
        total, free = total + take * value(lays[li][1]), free - take
    return total
