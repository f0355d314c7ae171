"""The exact solvers: the planner's placed priority equals an exhaustive search's optimum,
the dominance step loses nothing, and the plan says which solver proved it."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from builders import GIB, demand, gpu, node
from hypothesis import given, settings, strategies as st

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner import plan
from gpu_sharing.planner.mip import solve_by_configurations
from gpu_sharing.planner.problem import build_problem, smallest_fitting_tp
from gpu_sharing.planner.types import GpuPolicy, PlannerPolicy

POLICY = PlannerPolicy()


def _options(inv: Inventory, modes: dict[int, C], coarse: dict[int, bool], d, local: dict[int, bool], policy):
    """Every way one instance of ``d`` can sit, by the written rules (problem.py), as tuples of
    (gpu, partition, bytes) per rank."""
    out = []
    caps = {g.index: int(get_spec(g.model).vram_per_partition_bytes(modes[g.index]) * (1 - policy.headroom_fraction))
            for g in inv.gpus}
    parts = {g.index: get_spec(g.model).partitions(modes[g.index]) for g in inv.gpus}
    for g in inv.gpus:
        if not local[g.index]:
            continue
        tp = smallest_fitting_tp(d, caps[g.index])
        if tp is None or tp > parts[g.index]:
            continue
        for slots in itertools.combinations(range(parts[g.index]), tp):
            out.append(tuple((g.index, k, d.bytes_per_rank_by_tp[tp]) for k in slots))
    spanning = [g.index for g in inv.gpus if not local[g.index] and coarse[g.index]]
    tps = {smallest_fitting_tp(d, caps[i]) for i in spanning}
    for tp in sorted(t for t in tps if t):
        hosts = [i for i in spanning if smallest_fitting_tp(d, caps[i]) == tp]
        for gpus in itertools.combinations(hosts, tp):
            for slots in itertools.product(*[range(parts[i]) for i in gpus]):
                out.append(tuple((i, k, d.bytes_per_rank_by_tp[tp]) for i, k in zip(gpus, slots)))
    return out, caps


def brute_force(inv: Inventory, demands, policy=POLICY) -> int:
    """Best placed priority over every mode combination and every placement (tiny cases only)."""
    specs = {g.index: get_spec(g.model) for g in inv.gpus}
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode}
    choices = {g.index: ([pinned[g.index]] if g.index in pinned else
                         [c for c in specs[g.index].compute_modes() if specs[g.index].is_valid(c, g.memory_mode)])
               for g in inv.gpus}
    prob = build_problem(inv, demands, policy)
    local = {(g.gpu, di): bool(v) for (g_, di), v in prob.local_layouts.items() for g in prob.gpus if g.gpu == g_}
    best = 0
    for combo in itertools.product(*[choices[g.index] for g in inv.gpus]):
        modes = dict(zip([g.index for g in inv.gpus], combo))
        coarse = {i: specs[i].partitions(modes[i]) == min(specs[i].partitions(c) for c in choices[i]) for i in modes}
        per_model = []
        for di, d in enumerate(demands):
            opts, caps = _options(inv, modes, coarse, d, {i: local[i, di] for i in modes}, policy)
            per_model.append((d, opts))

        rest = [sum((d.priority + 1) * d.replicas for d, _o in per_model[m:]) for m in range(len(per_model) + 1)]

        def rec(m: int, used: dict, value: int) -> int:
            if m == len(per_model) or value + rest[m] <= best:  # done, or cannot beat the best so far
                return value
            d, opts = per_model[m]
            top = rec(m + 1, used, value)
            for count in range(d.replicas, 0, -1):
                for pick in itertools.combinations_with_replacement(range(len(opts)), count):
                    trial = dict(used)
                    ok = True
                    for o in pick:
                        for gpu_, k, b in opts[o]:
                            trial[gpu_, k] = trial.get((gpu_, k), 0) + b
                            ok = ok and trial[gpu_, k] <= caps[gpu_]
                    if ok:
                        top = max(top, rec(m + 1, trial, value + count * (d.priority + 1)))
                        if top == value + rest[m]:
                            return top
            return top

        best = max(best, rec(0, {}, 0))
    return best


@settings(max_examples=25, deadline=None)
@given(models=st.lists(st.tuples(st.sampled_from([4, 10, 20, 40, 90, 150, 230]), st.integers(1, 2), st.integers(0, 5)),
                       min_size=1, max_size=3),
       kinds=st.lists(st.sampled_from(["MI300X", "MI325X"]), min_size=1, max_size=2),
       start=st.sampled_from(["SPX", "CPX"]), pinned=st.sampled_from([None, "CPX", "QPX"]))
def test_placed_priority_equals_exhaustive_search(models, kinds, start, pinned):
    inv = Inventory(tuple(gpu(i, k, start) for i, k in enumerate(kinds)))
    demands = [demand(f"m{i}", gb, reps, prio) for i, (gb, reps, prio) in enumerate(models)]
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C(pinned)) for g in inv.gpus)) if pinned else POLICY
    p = plan(inv, demands, [], policy)
    assert p.solver.gap == 0
    assert int(p.solver.objective) == brute_force(inv, demands, policy)
    assert sum(d.priority + 1 for d in demands for x in p.placements if x.model == d.name) == int(p.solver.objective)


def test_dominance_step_loses_nothing_on_seeded_fleets():
    """The planner fixes most GPUs to SPX before proving; the configuration model on the
    unrestricted problem (every layout) must find the same optimum."""
    rng = random.Random(7)
    for _ in range(12):
        inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), rng.choice(["SPX", "CPX"]))
                              for i in range(rng.randint(1, 4))))
        demands = [demand(f"m{i}", rng.choice([2, 14, 30, 60, 140, 200]), rng.randint(1, 4), rng.randint(0, 9))
                   for i in range(rng.randint(2, 6))]
        full = solve_by_configurations(build_problem(inv, demands, POLICY), 30.0)
        assert full is not None and full.status == "OPTIMAL"
        assert plan(inv, demands, [], POLICY).solver.objective == full.objective


def test_oversubscribed_plan_names_its_solver_and_proof():
    demands = [demand("big", 140, 6, 9), demand("mid", 61, 8, 5), demand("small", 16, 12, 3)]
    p = plan(node(4), demands, [], POLICY)
    assert p.solver.name in ("surrogate-knapsack", "scip-configurations", "cp-sat", "greedy")
    assert p.solver.gap == 0 and p.solver.bound == p.solver.objective
    assert p.solver.objective < sum((d.priority + 1) * d.replicas for d in demands)
    assert p.unplaceable and all(u.reason for u in p.unplaceable)


def test_cpx_pinned_uses_tensor_parallel_inside_one_gpu():
    """Pinned CPX partitions hold 23 GiB: a 30 GiB model takes tp=2 on two partitions of one GPU."""
    inv = node(2, compute="CPX")
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus))
    p = plan(inv, [demand("thirty", 30, 3, 5), demand("small", 6, 10, 1)], [], policy)
    thirty = [x for x in p.placements if x.model == "thirty"]
    assert len(thirty) == 3 and all(x.tp == 2 and len({r.gpu for r in x.partitions}) == 1 for x in thirty)
    assert all(x.memory_bytes_per_rank <= 24 * GIB for x in p.placements)


def test_same_input_same_plan_when_the_solver_runs():
    rng = random.Random(3)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), "CPX") for i in range(6)))
    demands = [demand(f"m{i}", rng.choice([6, 30, 60, 75, 140]), rng.randint(1, 8), rng.randint(0, 9)) for i in range(9)]
    def timeless(p):  # wall time is the one thing allowed to differ
        return replace(p, solver=replace(p.solver, wall_time_s=0.0))

    first = plan(inv, demands, [], POLICY)
    assert first.solver.name != "greedy" and first.solver.gap == 0
    assert timeless(plan(inv, demands, [], POLICY)) == timeless(first)


def test_idle_gpu_keeps_its_mode_when_the_optimum_allows():
    """GPU 0 must go to SPX for the 150 GiB model; GPU 1's share fits its CPX partitions, so it
    is not repartitioned (nothing runs, so only the number of mode changes is at stake)."""
    inv = Inventory((gpu(0, "MI300X", "CPX"), gpu(1, "MI300X", "CPX")))
    demands = [demand("big", 150, 1, 9, tps=(1,)), demand("small", 16, 8, 5), demand("tiny", 4, 12, 1)]
    p = plan(inv, demands, [], POLICY)
    modes = {t.gpu: t.compute_mode for t in p.gpus}
    assert modes[0] == C.SPX and p.solver.gap == 0
    assert len(p.placements) == 21  # everything placed
    assert modes[1] == C.CPX and not any(t.gpu == 1 for t in p.to_repartition)
