"""The fleet placement problem as one integer program, solved lexicographically by CP-SAT (pure).

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

from ortools.sat.python import cp_model

from gpu_sharing.hardware.dcm import DcmProfile, PartitionType

PHASE_SHARES = (0.8, 0.1, 0.1)
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


def _phase_model(pools, options, weights, replicas, fixed: list[tuple[str, int]]):
    m = cp_model.CpModel()
    n = {(pi, p.name): m.NewIntVar(0, pool.node_count, "") for pi, pool in enumerate(pools) for p in pool.profiles}
    for pi, pool in enumerate(pools):
        m.Add(sum(n[pi, p.name] for p in pool.profiles) == pool.node_count)
    y = {o: m.NewIntVar(0, replicas[o.model], "") for o in options}
    variants: dict[tuple[int, str, PartitionType], list[Option]] = {}
    for o in options:
        variants.setdefault((o.model, pools[o.pool].gpu_model, o.kind), []).append(o)
    z = {v: m.NewBoolVar("") for v in variants}
    for v, opts in variants.items():
        m.Add(sum(y[o] for o in opts) <= replicas[v[0]] * z[v])
    for model in sorted({v[0] for v in variants}):
        m.AddAtMostOne([zz for v, zz in z.items() if v[0] == model])
        m.Add(sum(y[o] for o in options if o.model == model) <= replicas[model])
    for pi, pool in enumerate(pools):
        for kind in sorted({k for c in pool.counts for k in c}):
            mine = [o for o in options if o.pool == pi and o.kind == kind]
            for size in sorted({o.tp for o in mine}):
                room = sum(size * (c.get(kind, 0) // size) * n[pi, p.name] for p, c in zip(pool.profiles, pool.counts))
                m.Add(sum(o.tp * y[o] for o in mine if o.tp >= size) <= room)
    names = sorted({p.name for pool in pools for p in pool.profiles})
    used = {name: m.NewBoolVar("") for name in names}
    for (pi, name), var in n.items():
        m.Add(var <= pools[pi].node_count * used[name])
    terms = {"placed": sum(weights[o.model] * y[o] for o in options),
             "compute": sum(weights[o.model] * o.tp * pools[o.pool].cus[o.kind] * y[o] for o in options),
             "profiles": sum(used.values())}
    for key, value in fixed:
        m.Add(terms[key] <= value if key == "profiles" else terms[key] >= value)
    return m, n, y, terms


def _solver(time_s: float) -> cp_model.CpSolver:
    """One worker under a deterministic time limit (same input, same plan, whatever the load),
    with a wall-clock cap 1.5 times as long as the only load-dependent escape."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = time_s
    solver.parameters.max_time_in_seconds = 1.5 * time_s
    return solver


def solve_fleet(pools: list[PoolInput], options: list[Option], weights: list[int], replicas: list[int],
                time_budget_s: float) -> ModelSolution:
    """The three phases; a later phase that finds nothing in its time keeps the earlier solution."""
    fixed: list[tuple[str, int]] = []
    best: tuple[dict, dict] | None = None
    status, bound, wall = "UNKNOWN", 0, 0.0
    for phase, key in enumerate(("placed", "compute", "profiles")):
        m, n, y, terms = _phase_model(pools, options, weights, replicas, fixed)
        if best is not None:
            for k, var in n.items():
                m.AddHint(var, best[0].get(k, 0))
            for o, var in y.items():
                m.AddHint(var, best[1].get(o, 0))
        (m.Minimize if key == "profiles" else m.Maximize)(terms[key])
        solver = _solver(time_budget_s * PHASE_SHARES[phase])
        code = solver.Solve(m)
        wall += solver.WallTime()
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if phase == 0:
                raise RuntimeError("the fleet model found no solution (an empty plan is always feasible)")
            break
        best = ({k: solver.Value(v) for k, v in n.items()}, {o: solver.Value(v) for o, v in y.items() if solver.Value(v)})
        value = int(round(solver.ObjectiveValue()))
        if phase == 0:
            status = "OPTIMAL" if code == cp_model.OPTIMAL else "FEASIBLE"
            bound = int(solver.BestObjectiveBound() + 1e-6)
        fixed.append((key, value))  # keep this phase's optimum (or best found) in the next
    pn, py = best
    placed = sum(weights[o.model] * c for o, c in py.items())
    compute = sum(weights[o.model] * o.tp * pools[o.pool].cus[o.kind] * c for o, c in py.items())
    distinct = len({name for (pi, name), c in pn.items() if c})
    return ModelSolution(pn, py, placed, max(bound, placed), compute, distinct,
                         "OPTIMAL" if bound <= placed else status, wall)
