"""The fleet placement problem as one integer program, solved lexicographically by SCIP (pure).

Why a counting model and not a bin per node: on Kubernetes a pod gets whole partitions
(the device plugin hands out devices, nothing smaller), so a node of one DCM profile is a
bag of identical partitions per type, and nodes of one pool and profile are
interchangeable. Only how many nodes take each profile and how many replicas of each
model go to each (pool, partition type) matter.

Exactness of the counts. A replica takes ``tp`` partitions of one type on one node, and
tp is 1, 2, 4 or 8 (each divides the next). For such divisible sizes, items fit into
nodes with ``c_b`` partitions of a type iff, for every size s,
    sum of tp over items with tp >= s  <=  s * sum_b floor(c_b / s).
Necessity: an item of size >= s uses a whole number of s-blocks. Sufficiency: place items
largest first; when the s-items come, every node's free room is still congruent to c_b
modulo s, so it holds floor(c_b / s) minus the s-blocks already used; first fit succeeds
while the inequality holds. So decoding (fleet.py, first fit by decreasing tp) always
places what the model counted, and the model's bound is a bound on real placements.

Objectives, in order: (1) placed priority, sum of (priority + 1) per replica, as the node
planner counts it; (2) compute: sum of (priority + 1) x CUs a replica gets, so
higher-priority models get bigger partitions when room allows; (3) fewer distinct DCM
profiles in the ConfigMap. Each later phase keeps the earlier optimum as a constraint.
One InferenceService has one pod template, so a model's replicas all use one GPU model
and one partition type (a "variant"); pools of one GPU model share variants.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from gpu_sharing.hardware.dcm import DcmProfile, PartitionType

PHASE_SHARES = (0.6, 0.25, 0.15)
"""Shares of the time budget for the three objectives."""


@dataclass(frozen=True)
class PoolInput:
    name: str
    gpu_model: str
    node_count: int
    profiles: tuple[DcmProfile, ...]
    counts: tuple[dict[PartitionType, int], ...]
    """Partitions per type on one node of each profile (same order as ``profiles``)."""
    cus: dict[PartitionType, int]
    """CUs of one partition of each type."""


@dataclass(frozen=True)
class Option:
    """Replicas of demand ``model`` on ``pool``'s partitions of ``kind``, ``tp`` of them each."""

    model: int
    pool: int
    kind: PartitionType
    tp: int


@dataclass(frozen=True)
class ModelSolution:
    profile_nodes: dict[tuple[int, str], int]
    """(pool index, profile name) -> node count."""
    replicas: dict[Option, int]
    placed_priority: int
    bound: int
    compute: int
    distinct_profiles: int
    status: str
    wall_time_s: float


def _phase_solver(pools, options, weights, replicas, fixed: list[tuple[str, float]], time_s: float):
    s = pywraplp.Solver.CreateSolver("SCIP")
    n = {(pi, p.name): s.IntVar(0, pool.node_count, "") for pi, pool in enumerate(pools) for p in pool.profiles}
    for pi, pool in enumerate(pools):
        s.Add(sum(n[pi, p.name] for p in pool.profiles) == pool.node_count)
    y = {o: s.IntVar(0, replicas[o.model], "") for o in options}
    variants: dict[tuple[int, str, PartitionType], list[Option]] = {}
    for o in options:
        variants.setdefault((o.model, pools[o.pool].gpu_model, o.kind), []).append(o)
    z = {v: s.BoolVar("") for v in variants}
    for (m, _g, _k), opts in variants.items():
        s.Add(sum(y[o] for o in opts) <= replicas[m] * z[m, _g, _k])
    for m in sorted({v[0] for v in variants}):
        s.Add(sum(zz for v, zz in z.items() if v[0] == m) <= 1)
        s.Add(sum(y[o] for o in options if o.model == m) <= replicas[m])
    for pi, pool in enumerate(pools):
        kinds = sorted({k for c in pool.counts for k in c})
        for kind in kinds:
            mine = [o for o in options if o.pool == pi and o.kind == kind]
            for size in sorted({o.tp for o in mine}):
                room = sum(size * (c.get(kind, 0) // size) * n[pi, p.name] for p, c in zip(pool.profiles, pool.counts))
                s.Add(sum(o.tp * y[o] for o in mine if o.tp >= size) <= room)
    placed = s.Sum([weights[o.model] * y[o] for o in options])
    compute = s.Sum([weights[o.model] * o.tp * pools[o.pool].cus[o.kind] * y[o] for o in options])
    names = sorted({p.name for pool in pools for p in pool.profiles})
    used = {name: s.BoolVar("") for name in names}
    for (pi, name), var in n.items():
        s.Add(var <= pools[pi].node_count * used[name])
    terms = {"placed": placed, "compute": compute, "profiles": s.Sum(list(used.values()))}
    for key, value in fixed:
        if key == "profiles":
            s.Add(terms[key] <= value)
        else:
            s.Add(terms[key] >= value)
    s.SetTimeLimit(max(1, int(time_s * 1000)))
    return s, n, y, terms


def _values(n, y) -> tuple[dict, dict]:
    return ({k: int(round(v.solution_value())) for k, v in n.items()},
            {o: int(round(v.solution_value())) for o, v in y.items() if round(v.solution_value())})


def _hint(s, n, y, previous) -> None:
    if previous is None:
        return
    pn, py = previous
    pairs = [(v, float(pn.get(k, 0))) for k, v in n.items()] + [(v, float(py.get(o, 0))) for o, v in y.items()]
    s.SetHint([v for v, _ in pairs], [x for _, x in pairs])


def solve_fleet(pools: list[PoolInput], options: list[Option], weights: list[int], replicas: list[int],
                time_budget_s: float) -> ModelSolution:
    """The three phases; a later phase that finds nothing in its time keeps the earlier solution."""
    fixed: list[tuple[str, float]] = []
    best = None
    status, bound, wall = "UNKNOWN", 0, 0.0
    for phase, key in enumerate(("placed", "compute", "profiles")):
        s, n, y, terms = _phase_solver(pools, options, weights, replicas, fixed, time_budget_s * PHASE_SHARES[phase])
        _hint(s, n, y, best)
        (s.Minimize if key == "profiles" else s.Maximize)(terms[key])
        code = s.Solve()
        wall += s.wall_time() / 1000
        if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            if phase == 0:
                raise RuntimeError("the fleet model found no solution (an empty plan is always feasible)")
            break
        best = _values(n, y)
        value = s.Objective().Value()
        if phase == 0:
            status = "OPTIMAL" if code == pywraplp.Solver.OPTIMAL else "FEASIBLE"
            bound = int(s.Objective().BestBound() + 1e-6)
        fixed.append((key, round(value) - 0.5 if key != "profiles" else round(value) + 0.5))  # integers: keep the optimum found
    pn, py = best
    placed = sum(weights[o.model] * c for o, c in py.items())
    compute = sum(weights[o.model] * o.tp * pools[o.pool].cus[o.kind] * c for o, c in py.items())
    distinct = len({name for (pi, name), c in pn.items() if c})
    return ModelSolution(pn, py, placed, max(bound, placed), compute, distinct,
                         "OPTIMAL" if bound <= placed else status, wall)
