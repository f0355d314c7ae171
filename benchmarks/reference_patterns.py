"""Patterns for the reference (benchmarks/reference_colgen.py): the aggregated problem, a
partition type's feasible fillings, and turning a solution back into a plan.

Written without the planner: partitions come from reference_optimum.gpu_layouts (the GPU catalog
and the inventory). A *type* is the partitions of one hive with the same total and usable bytes
(and GPU, when a demand pins GPUs); a *kind* is the GPUs of one hive with the same layouts; a
*class* is (model, tp); a *pattern* is the ranks per class one partition of a type holds: bytes
within its usable bytes, compute shares summing to at most 1 (each rank carries its model's
share, as the planner's packing defines it), CUs that go round (reference_optimum.cu_need: a
share takes floor(share x CUs), a rank without one at least one CU; so a type also has its
CUs), at most ``replicas`` ranks of one model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model
from reference_optimum import Part, _admissible, cu_need, gpu_layouts

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.types import GpuTarget, Placement

SHARE_SCALE = 10**6
@dataclass
class Model:
    """The aggregated problem: types, kinds, classes and the columns generated so far."""

    types: list[tuple]  # (hive, total, capacity, gpu or -1, CUs)
    kinds: list[dict]  # {"hive", "count", "layouts": [(memory mode, {type: partitions})]}
    classes: list[tuple]  # (demand index, tp, bytes, share units, weight)
    demands: list
    admit: dict[int, list[int]]  # type -> classes its partitions may hold
    columns: dict[int, set[tuple]] = field(default_factory=dict)  # type -> patterns ((class, count), ...)
    layouts: dict = field(default_factory=dict)  # gpu -> [(compute, memory, [(partition index, type)])]

    def cus(self, k: int, ci: int) -> int:
        """CUs one rank of class ci takes on a partition of type k (reference_optimum.cu_need)."""
        return cu_need(self.demands[self.classes[ci][0]].compute_share, self.types[k][4])

    def cus_fit(self, k: int, pattern) -> bool:
        """Whether the ranks of ``pattern`` ((class, count), ...) get their CUs on type k."""
        return sum(self.cus(k, ci) * n for ci, n in pattern) <= self.types[k][4]

    def type_max(self, k: int) -> int:
        return sum(kd["count"] * max(lay[1].get(k, 0) for lay in kd["layouts"]) for kd in self.kinds)


def build(inventory, demands, policy) -> Model:
    layouts = gpu_layouts(inventory, policy)
    gpu_matters = any(d.allowed_gpus is not None for d in demands)
    types: dict[tuple, int] = {}
    kinds: dict[tuple, dict] = {}
    gpu_parts: dict[int, list] = {}
    for g in sorted(layouts):
        lays, where = [], []
        for c, mem, parts in layouts[g]:
            counts: dict[int, int] = {}
            refs = []
            for p in parts:
                key = (p.hive, p.total_bytes, p.capacity_bytes, p.gpu if gpu_matters else -1, p.cus)
                k = types.setdefault(key, len(types))
                counts[k] = counts.get(k, 0) + 1
                refs.append((p.index, k))
            lays.append((mem, counts))
            where.append((c, mem, refs))
        gpu_parts[g] = where
        hive = parts[0].hive
        sig = (hive, g if gpu_matters else -1, tuple((m, tuple(sorted(c.items()))) for m, c in lays))
        kind = kinds.setdefault(sig, {"hive": hive, "count": 0, "layouts": lays, "gpus": []})
        kind["count"] += 1
        kind["gpus"].append(g)
    classes = []
    for i, d in enumerate(demands):
        if d.replicas <= 0:
            continue
        share = int(round((d.compute_share or 0.0) * SHARE_SCALE))
        for tp in sorted(d.bytes_per_rank_by_tp):
            classes.append((i, tp, int(d.bytes_per_rank_by_tp[tp]), share, d.priority + 1))
    type_list = sorted(types, key=types.get)
    admit = {}
    for k, (hive, total, cap, gpu, cus) in enumerate(type_list):
        part = Part(gpu, 0, hive, total, cap, cus)
        admit[k] = [ci for ci, (i, tp, b, s, _w) in enumerate(classes)
                    if s <= SHARE_SCALE and _admissible(demands[i], tp, part)]
    return Model(type_list, list(kinds.values()), classes, list(demands), admit, {}, gpu_parts)


PRICE_SCALE = 10**6


def _pattern_model(m: Model, k: int, value: dict[int, float], penalty: dict[int, float] | None = None):
    """CP-SAT model of type k's patterns: ranks per class within bytes, shares, CUs and replicas;
    objective sum(count x value) (+ the penalty of each class present), scaled to integers."""
    model = cp_model.CpModel()
    cap = m.types[k][2]
    a, terms, bounds = {}, [], {}
    for ci in m.admit[k]:
        i, _tp, b, s, _w = m.classes[ci]
        most = min(cap // b, m.demands[i].replicas, SHARE_SCALE // s if s else cap, m.types[k][4] // m.cus(k, ci))
        if most <= 0:
            continue
        a[ci] = model.NewIntVar(0, most, f"a{ci}")
        bounds[ci] = most
        terms.append(int(round(value.get(ci, 0.0) * PRICE_SCALE)) * a[ci])
        if penalty and penalty.get(ci, 0.0) < 0:
            z = model.NewBoolVar("")
            model.Add(a[ci] <= most * z)
            model.Add(a[ci] >= z)
            terms.append(int(math.floor(penalty[ci] * PRICE_SCALE)) * z)
    model.Add(sum(m.classes[ci][2] * v for ci, v in a.items()) <= cap)
    if any(m.classes[ci][3] for ci in a):
        model.Add(sum(m.classes[ci][3] * v for ci, v in a.items()) <= SHARE_SCALE)
    if sum(m.cus(k, ci) * bounds[ci] for ci in a) > m.types[k][4]:
        model.Add(sum(m.cus(k, ci) * v for ci, v in a.items()) <= m.types[k][4])
    for i in {m.classes[ci][0] for ci in a}:
        model.Add(sum(v for ci, v in a.items() if m.classes[ci][0] == i) <= m.demands[i].replicas)
    return model, a, sum(terms), bounds


def _dp_pattern(m: Model, k: int, value: dict[int, float], max_cells: int = 200_000):
    """(the best pattern's value + a float margin, the pattern) by dynamic programming over
    bytes (in units of the gcd of the ranks' bytes) and shares, one model at a time (its counts
    over all its tps as one choice, so at most ``replicas`` ranks of it). None when the grid
    would be too fine (the caller then asks CP-SAT)."""
    cls = [ci for ci in m.admit[k] if value.get(ci, 0.0) > 1e-12]
    if not cls:
        return 0.0, ()
    unit = math.gcd(*[m.classes[ci][2] for ci in cls])
    share_unit = math.gcd(SHARE_SCALE, *[m.classes[ci][3] for ci in cls])
    cap, shares = m.types[k][2] // unit, SHARE_SCALE // share_unit
    if (cap + 1) * (shares + 1) > max_cells:
        return None
    by_model: dict[int, list[int]] = {}
    for ci in cls:
        by_model.setdefault(m.classes[ci][0], []).append(ci)
    table = np.zeros((shares + 1, cap + 1))
    steps = []
    for i, group in sorted(by_model.items()):
        options: dict[tuple[int, int], tuple[float, tuple]] = {}

        def walk(j, left, b, sh, val, chosen):
            if j == len(group):
                if chosen and val > options.get((b, sh), (-1.0,))[0]:
                    options[b, sh] = (val, tuple(chosen))
                return
            ci = group[j]
            cb, cs = m.classes[ci][2] // unit, m.classes[ci][3] // share_unit
            for n in range(left + 1):
                if b + n * cb > cap or sh + n * cs > shares:
                    break
                walk(j + 1, left - n, b + n * cb, sh + n * cs, val + n * value[ci], chosen + ([(ci, n)] if n else []))

        walk(0, m.demands[i].replicas, 0, 0, 0.0, [])
        new, choice = table.copy(), np.full(table.shape, -1, dtype=np.int32)
        opts = list(options.items())
        for o, ((b, sh), (val, _c)) in enumerate(opts):
            cand = np.full(table.shape, -np.inf)
            cand[sh:, b:] = table[:shares + 1 - sh, :cap + 1 - b] + val
            better = cand > new + 1e-12
            new[better], choice[better] = cand[better], o
        steps.append((opts, choice))
        table = new
    pattern, sh, b = [], shares, cap
    for opts, choice in reversed(steps):
        o = int(choice[sh, b])
        if o >= 0:
            (ob, osh), (_v, chosen) = opts[o]
            pattern += chosen
            sh, b = sh - osh, b - ob
    return float(table[shares, cap]) + 1e-9, tuple(sorted(pattern))


def complete(m: Model, k: int, pattern: tuple, value: dict[int, float]) -> tuple:
    """The pattern filled up with whatever ranks still fit (classes by price, then priority per
    byte): a pattern's reduced cost cannot drop (prices are >= 0), and full patterns combine
    into integer plans far more often than the bare optimum of the pricing problem."""
    counts = dict(pattern)
    left = m.types[k][2] - sum(m.classes[ci][2] * n for ci, n in counts.items())
    share_left = SHARE_SCALE - sum(m.classes[ci][3] * n for ci, n in counts.items())
    cus_left = m.types[k][4] - sum(m.cus(k, ci) * n for ci, n in counts.items())
    per_model: dict[int, int] = {}
    for ci, n in counts.items():
        per_model[m.classes[ci][0]] = per_model.get(m.classes[ci][0], 0) + n
    for ci in sorted(m.admit[k], key=lambda ci: (-value.get(ci, 0.0), -m.classes[ci][4] / m.classes[ci][2], ci)):
        i, _tp, b, s, _w = m.classes[ci]
        n = min(left // b, m.demands[i].replicas - per_model.get(i, 0), share_left // s if s else left,
                cus_left // m.cus(k, ci))
        if n > 0:
            counts[ci] = counts.get(ci, 0) + n
            left, share_left, cus_left = left - n * b, share_left - n * s, cus_left - n * m.cus(k, ci)
            per_model[i] = per_model.get(i, 0) + n
    return tuple(sorted(counts.items()))


def _best_pattern(m: Model, k: int, value: dict[int, float]) -> tuple[float, tuple]:
    """(an upper bound on the best pattern's value, the best pattern found): by dynamic
    programming where the grid is coarse enough, else by CP-SAT (the bound then covers the
    rounding of values to integers, half a unit per rank). The dynamic programme leaves CUs
    out (a relaxation): its optimum counts only when its pattern gives every rank its CUs."""
    exact = _dp_pattern(m, k, value)
    if exact is not None and m.cus_fit(k, exact[1]):
        return exact[0], complete(m, k, exact[1], value)
    model, a, objective, bounds = _pattern_model(m, k, value)
    if not a:
        return 0.0, ()
    model.Maximize(objective)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10.0
    solver.parameters.cp_model_presolve = False
    code = solver.Solve(model)
    ranks = sum(bounds.values())
    slack = (0.5 * ranks + 1) / PRICE_SCALE
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return solver.BestObjectiveBound() / PRICE_SCALE + slack, ()
    pattern = tuple((ci, solver.Value(v)) for ci, v in sorted(a.items()) if solver.Value(v))
    return solver.BestObjectiveBound() / PRICE_SCALE + slack, pattern


def plan_patterns(m: Model, plan) -> list[tuple[int, tuple]]:
    """(type, pattern) of every partition a plan (the planner's, checked) uses: seed columns,
    so the restricted MIP starts from at least that plan's value and has to improve on it."""
    index = {d.name: i for i, d in enumerate(m.demands)}
    cls = {(i, tp): ci for ci, (i, tp, _b, _s, _w) in enumerate(m.classes)}
    where = {}
    for t in plan.gpus:
        for c, mu, refs in m.layouts.get(t.gpu, []):
            if (c, mu) == (t.compute_mode, t.memory_mode):
                where.update({(t.gpu, i): k for i, k in refs})
    held: dict[tuple[int, int], dict[int, int]] = {}
    for x in plan.placements:
        ci = cls.get((index.get(x.model, -1), x.tp))
        for r in x.partitions:
            if ci is not None and (r.gpu, r.index) in where:
                held.setdefault((r.gpu, r.index), {}).setdefault(ci, 0)
                held[r.gpu, r.index][ci] += 1
    return [(where[key], tuple(sorted(c.items()))) for key, c in sorted(held.items())
            if all(ci in m.admit[where[key]] for ci in c) and m.cus_fit(where[key], tuple(c.items()))]


def greedy_patterns(m: Model, k: int, value: dict[int, float]) -> list[tuple]:
    """Fillings of type k taken greedily (by value per byte, by value): cheap columns that
    spare most calls to the exact pricing."""
    out = []
    cls = [ci for ci in m.admit[k] if value.get(ci, 0.0) > 1e-9]
    for key in (lambda ci: -value[ci] / m.classes[ci][2], lambda ci: -value[ci]):
        left, share_left, cus_left, per_model, pattern = m.types[k][2], SHARE_SCALE, m.types[k][4], {}, []
        for ci in sorted(cls, key=key):
            i, _tp, b, s, _w = m.classes[ci]
            n = min(left // b, m.demands[i].replicas - per_model.get(i, 0), share_left // s if s else left,
                    cus_left // m.cus(k, ci))
            if n > 0:
                pattern.append((ci, n))
                left, share_left, cus_left = left - n * b, share_left - n * s, cus_left - n * m.cus(k, ci)
                per_model[i] = per_model.get(i, 0) + n
        if pattern:
            out.append(complete(m, k, tuple(sorted(pattern)), value))
    return out


def pattern_value(y, m: Model, k: int) -> dict[int, float]:
    h = m.types[k][0]
    return {ci: y[0].get((ci, h), 0.0) for ci in m.admit[k]}


@dataclass(frozen=True)
class RefPlan:
    """A solution of the reference in the planner's output types, for check_plan."""

    gpus: tuple[GpuTarget, ...]
    placements: tuple[Placement, ...]


def decode(m: Model, sol: dict) -> RefPlan:
    """Layouts to GPUs, patterns to partitions, ranks dealt round-robin to instances (each
    partition holds at most n ranks of a class, so an instance's ranks land on distinct ones)."""
    targets, free = [], {}
    for q, kd in enumerate(m.kinds):
        gpus = list(kd["gpus"])
        for li in range(len(kd["layouts"])):
            for _ in range(sol["w"].get((q, li), 0)):
                g = gpus.pop(0)
                c, mu, refs = m.layouts[g][li]
                targets.append(GpuTarget(g, c, mu))
                for index, k in refs:
                    free.setdefault(k, []).append(PartitionRef(g, index))
    totals = {(t.gpu, r[0]): m.types[r[1]][1] for t in targets for c, mu, refs in [next(
        x for x in m.layouts[t.gpu] if (x[0], x[1]) == (t.compute_mode, t.memory_mode))] for r in refs}
    ranks: dict[tuple, list] = {}
    for (k, pattern), count in sorted(sol["lam"].items()):
        for _ in range(count):
            ref = free[k].pop(0)
            for ci, a in pattern:
                ranks.setdefault((ci, m.types[k][0]), []).append((ref, a))
    placements, replica = [], {}
    for (ci, h), count in sorted(sol["n"].items()):
        i, tp, b, _s, _w = m.classes[ci]
        d = m.demands[i]
        seq = []
        for ref, a in ranks.get((ci, h), []):
            seq += [ref] * min(a, count, tp * count - len(seq))
        for j in range(count):
            r = replica.setdefault(d.name, 0)
            replica[d.name] += 1
            refs = tuple(seq[j::count])
            placements.append(Placement(d.instance_id(r), d.name, r, refs, tp, b, totals[refs[0].gpu, refs[0].index]
                                        if refs else 0, d.compute_share))
    return RefPlan(tuple(sorted(targets, key=lambda t: t.gpu)), tuple(placements))


class _Collect(cp_model.CpSolverSolutionCallback):
    def __init__(self, a: dict, limit: int):
        super().__init__()
        self.a, self.limit, self.found = a, limit, []

    def on_solution_callback(self) -> None:
        self.found.append(tuple((ci, self.Value(v)) for ci, v in sorted(self.a.items()) if self.Value(v)))
        if len(self.found) >= self.limit:
            self.StopSearch()
