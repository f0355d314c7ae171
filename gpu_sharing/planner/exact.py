"""Exact placement with OR-Tools CP-SAT over aggregated counts (pure: no clock, no I/O).

Why aggregated counts: replicas of one model are interchangeable, and a boolean per
(replica, partition) multiplies symmetric solutions so that CP-SAT cannot prove optimality
in time (DESIGN.md: 20-28 % gaps after 5 s). The variables here are
  y[g, o]     GPU g takes layout o (a valid compute+memory pair),
  n[c, s]     instances of class c = (model, tp) in scope s: one GPU for a model that one
              GPU can hold, the XGMI hive for a model that must span GPUs (problem.py rules),
  r[g, k, c]  ranks of class c on partition (slot) k of GPU g.
A tp-t class needs sum r = t * n over its scope and r <= n on every slot (on every GPU when
spanning). Any such counts split into n groups of t distinct partitions (decode.py takes the
t fullest each time), so the aggregation loses no solution. Partitions of one GPU and identical GPUs are
ordered in the proof phase (symmetry breaking). The second phase keeps the proven placed
priority and minimises disruption: running instances kept in place, then no memory-mode
change, then no compute-mode change, then replicas spread over GPUs, then fewer partitions.
Determinism: one worker and a deterministic time limit, so the same input gives the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ortools.sat.python import cp_model

from gpu_sharing.planner.problem import SHARE_UNITS, GpuChoices, Problem, cu_cost
from gpu_sharing.planner.solution import Scope, Solution, SolveResult
from gpu_sharing.planner.surrogate import surrogate_bound
from gpu_sharing.planner.types import RunningInstance


@dataclass
class _Model:
    m: cp_model.CpModel
    y: dict[tuple[int, int], cp_model.IntVar]
    n: dict[tuple[int, Scope], cp_model.IntVar]
    r: dict[tuple[int, int, int], cp_model.IntVar]
    at_slot: dict[tuple[int, int], list[tuple[int, cp_model.IntVar]]]
    """(gpu, slot) -> [(class index, ranks var)]."""
    placed: cp_model.LinearExpr
    keep: dict[str, cp_model.IntVar] = field(default_factory=dict)


def _build(prob: Problem, symmetry: bool) -> _Model:
    m = cp_model.CpModel()
    y = {(g.gpu, o): m.NewBoolVar(f"y{g.gpu}_{o}") for g in prob.gpus for o in range(len(g.layouts))}
    for g in prob.gpus:
        m.AddExactlyOne(y[g.gpu, o] for o in range(len(g.layouts)))
    _same_memory_per_hive(m, prob, y)
    r: dict[tuple[int, int, int], cp_model.IntVar] = {}
    at_slot: dict[tuple[int, int], list] = {}
    scoped: dict[tuple[int, Scope], list[tuple[int, cp_model.IntVar]]] = {}
    for g in prob.gpus:
        for k in range(g.slots):
            active = [o for o, lay in enumerate(g.layouts) if k < lay.partitions]
            here = at_slot.setdefault((g.gpu, k), [])
            top: dict[int, int] = {}  # class -> its ranks' upper bound here
            for ci, c in enumerate(prob.classes):
                admits = prob.admits(g, k, c)
                if not admits:
                    continue
                top[ci] = prob.rank_bound(g, k, c, admits)
                v = m.NewIntVar(0, top[ci], f"r{g.gpu}_{k}_{ci}")
                r[g.gpu, k, ci] = v
                here.append((ci, v))
                scoped.setdefault((ci, prob.scope(g, c)), []).append((g.gpu, v))
                if set(admits) != set(active):  # only some layouts admit c here
                    m.Add(v == 0).OnlyEnforceIf([y[g.gpu, o].Not() for o in admits])
            if here:
                cap = sum(g.layouts[o].capacity_bytes[k] * y[g.gpu, o] for o in active)
                m.Add(sum(prob.classes[ci].bytes_per_rank * v for ci, v in here) <= cap)
                shares = [(prob.classes[ci].share_units, v) for ci, v in here if prob.classes[ci].share_units]
                if shares:
                    m.Add(sum(s * v for s, v in shares) <= SHARE_UNITS)
                _cus_cover_tenants(m, prob, g, k, active, [(ci, v, top[ci]) for ci, v in here], y)
    n: dict[tuple[int, Scope], cp_model.IntVar] = {}
    for (ci, scope), entries in scoped.items():
        c = prob.classes[ci]
        gpus = {gpu for gpu, _v in entries}
        units = len(gpus) if prob.one_rank_per_gpu(scope) else len(entries)
        if units < c.tp:  # nowhere to form a whole instance
            for _gpu, v in entries:
                m.Add(v == 0)
            continue
        v_n = m.NewIntVar(0, c.demand.replicas, f"n{ci}_{scope[0]}{scope[1]}")
        n[ci, scope] = v_n
        m.Add(sum(v for _g, v in entries) == c.tp * v_n)
        if c.tp > 1:
            per = {}
            for gpu, v in entries:  # one rank per partition; one per GPU when spanning
                per.setdefault(gpu if prob.one_rank_per_gpu(scope) else (gpu, id(v)), []).append(v)
            for vs in per.values():
                m.Add(sum(vs) <= v_n)
    for di in sorted({c.demand_index for c in prob.classes}):
        per_model = [v for (ci, _s), v in n.items() if prob.classes[ci].demand_index == di]
        if per_model:
            m.Add(sum(per_model) <= prob.demands[di].replicas)
    placed = sum(prob.classes[ci].weight * v for (ci, _s), v in n.items())
    model = _Model(m, y, n, r, at_slot, placed)
    if symmetry:
        _break_symmetry(model, prob)
    return model


def _cus_cover_tenants(m, prob: Problem, g: GpuChoices, k: int, active: list[int], here: list, y) -> None:
    """The partition's CUs cover its tenants (problem.cus_fit: floor(share x CUs) per share, one
    per tenant without one), in each layout that has this slot; left out where it cannot bind."""
    for o in active:
        cus = g.layouts[o].cus[k]
        costs = [(cu_cost(prob.classes[ci].demand.cu_request, cus), v, most) for ci, v, most in here]
        if sum(c * most for c, _v, most in costs) <= cus:
            continue
        con = m.Add(sum(c * v for c, v, _most in costs) <= cus)
        if len(active) > 1:
            con.OnlyEnforceIf(y[g.gpu, o])


def _same_memory_per_hive(m, prob: Problem, y) -> None:
    """NPS is hive-wide: every GPU of a hive takes the same memory mode."""
    for h in sorted({g.hive for g in prob.gpus}):
        members = [g for g in prob.gpus if g.hive == h]
        modes = sorted({lay.memory for g in members for lay in g.layouts}, key=lambda x: x.value)
        if len(modes) < 2:
            continue
        for mode in modes:
            ind = [sum(y[g.gpu, o] for o, lay in enumerate(g.layouts) if lay.memory == mode) for g in members]
            for a, b in zip(ind, ind[1:]):
                m.Add(a == b)


def _load(model: _Model, prob: Problem, gpu: int, slot: int | None = None):
    slots = [slot] if slot is not None else [k for (g, k) in model.at_slot if g == gpu]
    return sum(prob.classes[ci].bytes_per_rank * v for k in slots for ci, v in model.at_slot.get((gpu, k), []))


def _break_symmetry(model: _Model, prob: Problem) -> None:
    """Partitions of one layout are alike, so sort their loads; identical GPUs are sorted too."""
    m = model.m
    for g in prob.gpus:
        for k in range(g.slots - 1):
            if all(lay.partitions <= k + 1 or (lay.capacity_bytes[k] == lay.capacity_bytes[k + 1]
                                                and lay.total_bytes[k] == lay.total_bytes[k + 1])
                   for lay in g.layouts):
                m.Add(_load(model, prob, g.gpu, k) >= _load(model, prob, g.gpu, k + 1))
    groups: dict[tuple, list[GpuChoices]] = {}
    for g in prob.gpus:
        allowed = tuple(bool(prob.admits(g, 0, c)) for c in prob.classes)
        local = tuple(sorted((di, tuple(sorted(v.items()))) for (gpu, di), v in prob.local_layouts.items() if gpu == g.gpu))
        groups.setdefault((g.hive, g.model, g.layouts, allowed, local), []).append(g)
    for members in groups.values():
        biggest = max(sum(lay.capacity_bytes) for lay in members[0].layouts)
        for a, b in zip(members, members[1:]):
            key_a = sum(o * model.y[a.gpu, o] for o in range(len(a.layouts))) * (biggest + 1) - _load(model, prob, a.gpu)
            key_b = sum(o * model.y[b.gpu, o] for o in range(len(b.layouts))) * (biggest + 1) - _load(model, prob, b.gpu)
            m.Add(key_a <= key_b)


DETERMINISTIC_PER_SECOND = 0.25
"""CP-SAT deterministic seconds per second of time budget. Measured on the shared 2-core
machine under load 5: CP-SAT does 0.08-0.2 deterministic seconds of work per wall second on
the 8-GPU counts models, and Python builds the model too; this keeps a phase near its share
of the budget while the deterministic limit, not the wall clock, stops it."""
WALL_GUARD_FACTOR = 10.0
"""Wall-clock guards are this many times the deterministic limit: far above what the
deterministic limit takes on a loaded 2-core machine, so they never decide a result (a plan
must not change with the machine's load); they only stop a solver that runs away."""


def _solver(time_budget_s: float, workers: int) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    s.parameters.num_workers = workers
    s.parameters.max_deterministic_time = max(0.02, time_budget_s * DETERMINISTIC_PER_SECOND)
    s.parameters.max_time_in_seconds = max(1.0, WALL_GUARD_FACTOR * time_budget_s)  # a guard only
    s.parameters.random_seed = 0
    return s


def _status(s: cp_model.CpSolver, code) -> str:
    return s.StatusName(code)


def _extract(s: cp_model.CpSolver, model: _Model, prob: Problem) -> Solution:
    layout = {g.gpu: next(o for o in range(len(g.layouts)) if s.Value(model.y[g.gpu, o])) for g in prob.gpus}
    ranks = {key: s.Value(v) for key, v in model.r.items() if s.Value(v)}
    inst = {key: s.Value(v) for key, v in model.n.items() if s.Value(v)}
    kept = tuple(sorted(i for i, v in model.keep.items() if s.Value(v)))
    return Solution(layout, ranks, inst, kept)


def _hint(model: _Model, hint: Solution | None) -> None:
    if hint is None:
        return
    for (g, o), v in model.y.items():
        model.m.AddHint(v, 1 if hint.layout.get(g) == o else 0)
    for key, v in model.r.items():
        model.m.AddHint(v, hint.ranks.get(key, 0))
    for key, v in model.n.items():
        model.m.AddHint(v, hint.instances.get(key, 0))


def solve_placed_priority(prob: Problem, hint: Solution | None, time_budget_s: float, workers: int = 1,
                          at_most: int | None = None) -> SolveResult:
    """Phase 1: the most placed priority (sum of priority + 1 over placed replicas), with its
    proof. ``at_most``: the surrogate bound when the caller has it."""
    model = _build(prob, symmetry=True)
    bound = surrogate_bound(prob) if at_most is None else at_most
    model.m.Add(model.placed <= bound)  # a proof the moment a plan reaches it
    _hint(model, hint)
    model.m.Maximize(model.placed)
    s = _solver(time_budget_s, workers)
    code = s.Solve(model.m)
    status = _status(s, code)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult(status, 0, 0, s.WallTime(), None)
    return SolveResult(status, int(round(s.ObjectiveValue())), int(round(s.BestObjectiveBound())), s.WallTime(),
                       _extract(s, model, prob))


def solve_least_disruption(prob: Problem, placed_at_least: int, current: Sequence[RunningInstance],
                           hint: Solution | None, time_budget_s: float) -> SolveResult:
    """Phase 2: keep the placed priority, disturb as little as possible (see the module docstring)."""
    model = _build(prob, symmetry=False)
    m = model.m
    m.Add(model.placed >= placed_at_least)
    keep_terms = _add_keeps(model, prob, current)
    by_gpu = {g.gpu: g for g in prob.gpus}
    mem_changes: list = []
    mode_changes: list = []
    for g in prob.gpus:
        cur = g.layouts[g.current] if g.current is not None else None
        for o, lay in enumerate(g.layouts):
            if cur is None or lay.memory != cur.memory:
                mem_changes.append(model.y[g.gpu, o])
            if cur is None or lay.compute != cur.compute:
                mode_changes.append(model.y[g.gpu, o])
    spread, used = [], []
    for g in by_gpu.values():
        per_model: dict[int, list] = {}
        for k in range(g.slots):
            vs = model.at_slot.get((g.gpu, k), [])
            for ci, v in vs:
                if prob.classes[ci].demand.replicas > 1:
                    per_model.setdefault(prob.classes[ci].demand_index, []).append(v)
            if vs:
                u = m.NewBoolVar("")
                m.Add(sum(v for _c, v in vs) == 0).OnlyEnforceIf(u.Not())
                used.append(u)
        for _di, vs in sorted(per_model.items()):  # replicas on different GPUs: failure domains
            z = m.NewBoolVar("")
            m.Add(sum(vs) >= 1).OnlyEnforceIf(z)
            spread.append(z)
    w_spread = len(used) + 1
    w_mode = w_spread * (len(spread) + 1)
    w_mem = w_mode * (len(prob.gpus) + 1)
    w_keep = w_mem * (len(prob.gpus) + 1)
    m.Maximize(w_keep * sum(keep_terms) - w_mem * sum(mem_changes) - w_mode * sum(mode_changes)
               + w_spread * sum(spread) - sum(used))
    _hint(model, hint)
    s = _solver(time_budget_s, 1)
    code = s.Solve(m)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult(_status(s, code), 0, 0, s.WallTime(), None)
    sol = _extract(s, model, prob)
    placed = sum(prob.classes[ci].weight * v for (ci, _h), v in sol.instances.items())
    return SolveResult(_status(s, code), placed, placed, s.WallTime(), sol)


def keepable(prob: Problem, current: Sequence[RunningInstance]) -> dict[str, tuple[int, RunningInstance]]:
    """Running instances that may stay where they are: same fingerprint, replica still wanted,
    their tp still the one the rules give, on GPUs whose current layout is allowed."""
    by_gpu = {g.gpu: g for g in prob.gpus}
    out = {}
    for run in current:
        for ci, c in enumerate(prob.classes):
            d = c.demand
            if d.name != run.model or d.fingerprint != run.fingerprint or c.tp != len(run.partitions):
                continue
            if run.replica >= d.replicas or len(set(run.partitions)) != c.tp:
                continue
            if not all(ref.gpu in by_gpu and by_gpu[ref.gpu].current is not None
                       and ref.index < by_gpu[ref.gpu].layouts[by_gpu[ref.gpu].current].partitions
                       for ref in run.partitions):
                continue
            scopes = {prob.scope(by_gpu[ref.gpu], c) for ref in run.partitions}
            gpus = [ref.gpu for ref in run.partitions]
            if len(scopes) == 1 and (not prob.one_rank_per_gpu(next(iter(scopes))) or len(set(gpus)) == len(gpus)):
                out[run.instance_id] = (ci, run)
    return out


def _add_keeps(model: _Model, prob: Problem, current: Sequence[RunningInstance]) -> list:
    m = model.m
    by_gpu = {g.gpu: g for g in prob.gpus}
    kept_at: dict[tuple[int, int, int], list] = {}
    extra_bytes: dict[tuple[int, int], list] = {}
    per_scope: dict[tuple[int, Scope], list] = {}
    for iid, (ci, run) in sorted(keepable(prob, current).items()):
        c = prob.classes[ci]
        scope = prob.scope(by_gpu[run.partitions[0].gpu], c)
        if (ci, scope) not in model.n or not all((ref.gpu, ref.index, ci) in model.r for ref in run.partitions):
            continue
        v = m.NewBoolVar(f"keep_{iid}")
        model.keep[iid] = v
        for ref in run.partitions:
            m.AddImplication(v, model.y[ref.gpu, by_gpu[ref.gpu].current])
            kept_at.setdefault((ref.gpu, ref.index, ci), []).append(v)
            if run.memory_bytes_per_rank != c.bytes_per_rank:
                extra_bytes.setdefault((ref.gpu, ref.index), []).append((run.memory_bytes_per_rank - c.bytes_per_rank, v))
        per_scope.setdefault((ci, scope), []).append(v)
    for key, vs in kept_at.items():
        m.Add(model.r[key] >= sum(vs))
    for (gpu, k), terms in extra_bytes.items():  # a kept instance uses what it measured, not the estimate
        g = by_gpu[gpu]
        m.Add(_load(model, prob, gpu, k) + sum(b * v for b, v in terms)
              <= g.layouts[g.current].capacity_bytes[k]).OnlyEnforceIf(model.y[gpu, g.current])
    for (ci, scope), vs in per_scope.items():
        if prob.classes[ci].tp == 1:
            continue
        groups: dict[object, list] = {}
        for (gpu, k, cc), v in model.r.items():
            if cc == ci and prob.scope(by_gpu[gpu], prob.classes[ci]) == scope:
                groups.setdefault(gpu if prob.one_rank_per_gpu(scope) else (gpu, k), []).append((gpu, k, v))
        for members in groups.values():  # what is not kept must still split into whole instances
            free = sum(v for _g, _k, v in members) - sum(x for g, k, _v in members for x in kept_at.get((g, k, ci), []))
            m.Add(free <= model.n[ci, scope] - sum(vs))
    return list(model.keep.values())
