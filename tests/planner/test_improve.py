"""The ruin-and-recreate step (gpu_sharing/planner/improve.py) after the layout search.

Checked against the benchmark's independent reference (benchmarks/reference_colgen.py, itself
checked against the exhaustive search in test_reference_colgen.py): on pinned-CPX nodes where
the layout search alone falls short of the proven optimum, the step reaches it. And on random
nodes it never returns a worse or an infeasible packing, and never touches a kept instance."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from builders import demand, gpu
from reference_colgen import colgen_reference
from reference_optimum import check_plan, placed_priority
from test_planner import launcher_accepts

import gpu_sharing.planner.planner as planner_module
from gpu_sharing.planner import full_search
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner import plan
from gpu_sharing.planner.improve import MAX_MOVES, Improved, improve, mode_slots, moves_for
from gpu_sharing.planner.packing import Packing, build_slots, items_for
from gpu_sharing.planner.problem import build_problem
from gpu_sharing.planner.types import GpuPolicy, PlannerPolicy


def cpx_case(seed: int):
    """1-2 GPUs pinned to CPX (8 partitions each), 3-7 models of 2-60 GiB, some with shares."""
    rng = random.Random(seed)
    n = rng.choice([1, 2])
    kind = rng.choice(["MI300X", "MI325X"])
    inv = Inventory(tuple(gpu(i, kind, "CPX") for i in range(n)))
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(i, C.CPX) for i in range(n)))
    demands = [demand(f"m{i}", rng.choice([2, 6, 10, 14, 16, 20, 30, 45, 60]), rng.randint(1, 4), rng.randint(0, 9),
                      share=rng.choice([None, None, 0.25, 0.5])) for i in range(rng.randint(3, 7))]
    return inv, demands, policy


def _without_the_step(monkeypatch):
    monkeypatch.setattr(full_search, "ruin_and_recreate",
                        lambda packing, bound, modes, layouts=None, fixed=frozenset(), max_moves=0:
                        Improved(packing, modes, 0, 0, 0))


@pytest.mark.parametrize("seed", [106, 142, 172, 258])
def test_the_step_turns_a_short_layout_search_into_the_proven_optimum(seed, monkeypatch):
    """Below pattern_master.MIN_BUDGET_S the pattern step does not run: ruin and recreate is
    what closes the layout search's gap (as on a re-plan's keeping search)."""
    inv, demands, policy = cpx_case(seed)
    policy = replace(policy, time_budget_s=0.5)
    with monkeypatch.context() as m:
        _without_the_step(m)
        alone = placed_priority(plan(inv, demands, [], policy), demands)
    p = plan(inv, demands, [], policy)
    ref = colgen_reference(inv, demands, policy, known=0, time_limit_s=20)
    assert ref.optimum is not None and alone < ref.optimum  # the layout search alone falls short
    assert placed_priority(p, demands) == ref.optimum
    assert check_plan(inv, demands, policy, p) == []
    assert "ruin and recreate" in p.solver.status


def _layout_search(inv, demands, policy):
    """What plan() hands to the step at a budget below pattern_master.MIN_BUDGET_S: the layout
    search's packing, modes and bound."""
    policy = replace(policy, time_budget_s=0.5)
    specs = planner_module.gpu_specs(inv)
    memory = planner_module.memory_targets(inv, policy, specs)
    candidates = planner_module.candidate_modes(inv, policy, specs, memory)
    full = build_problem(inv, demands, policy, full=True)
    with pytest.MonkeyPatch.context() as m:
        _without_the_step(m)
        bound, found, _note, _source = full_search.search_full_set(inv, demands, policy, specs, full, candidates)
    return found, bound, mode_slots(inv, specs, policy, found.modes, candidates)


def _feasible(packing) -> None:
    """Bytes, shares, one rank per partition, one hive per instance, as many ranks as tp, and
    every partition's tenants accepted by the launcher's CU rule (isolation/cu_masks)."""
    used: dict = {}
    tenants: dict = {}
    for a in packing.assignments.values():
        assert len(set(a.refs)) == len(a.refs) == a.tp
        assert len({packing.slots[r].hive for r in a.refs}) == 1
        for r in a.refs:
            b, s = used.get(r, (0, 0.0))
            used[r] = (b + a.bytes_per_rank, s + (a.item.demand.compute_share or 0.0))
            tenants.setdefault(r, {})[a.item.instance_id] = a.item.demand.compute_share
    for r, (b, s) in used.items():
        assert b <= packing.slots[r].capacity_bytes and s <= 1.0 + 1e-9
        assert launcher_accepts(packing.slots[r].cus, tenants[r]), (r, tenants[r])


@pytest.mark.parametrize("keep_every", [0, 3])
def test_the_step_never_returns_a_worse_or_infeasible_packing_and_keeps_fixed_instances(keep_every):
    """Nodes where the layout search leaves a gap (CPX pinned or free modes); with every third
    instance fixed (a re-plan's kept ones) or none."""
    gained = 0
    for seed, pinned in [(87, True), (148, True), (169, True), (120, True), (55, False), (75, False), (399, False)]:
        inv, demands, policy = cpx_case(seed)
        policy = policy if pinned else PlannerPolicy()
        found, bound, layouts = _layout_search(inv, demands, policy)
        assert found.placed < bound
        fixed = frozenset(sorted(found.packing.assignments)[::keep_every] if keep_every else ())
        before = {iid: (a.tp, a.refs) for iid, a in found.packing.assignments.items()}
        held = {r.gpu for iid in fixed for r in found.packing.assignments[iid].refs}
        out = improve(found.packing, bound, found.modes, layouts, fixed)
        assert found.placed <= out.placed <= bound and out.gained == out.placed - found.placed and out.moves > 0
        assert {iid: (a.tp, a.refs) for iid, a in found.packing.assignments.items()} == before  # input untouched
        _feasible(out.packing)
        for iid in fixed:
            assert (out.packing.assignments[iid].tp, out.packing.assignments[iid].refs) == before[iid]
        assert all(out.modes[g] == found.modes[g] for g in held)
        placed = {a.item.instance_id for a in out.packing.assignments.values()}
        assert placed.isdisjoint(i.instance_id for i in out.packing.unplaced)
        assert len(placed) + len(out.packing.unplaced) == sum(d.replicas for d in demands)
        assert out == improve(found.packing, bound, found.modes, layouts, fixed)  # same input, same result
        gained += out.gained
    assert gained > 0  # the cases exercise moves that improve, not only rejected ones


def test_a_gpu_switches_mode_when_its_partitions_then_hold_more():
    """One SPX MI300X, 8 replicas with a 0.5 compute share: SPX holds 2 (shares), CPX holds 8
    (two 11.5 GiB ranks per 24 GiB partition). Started at SPX with nothing placed, the step's
    mode-switch move finds CPX."""
    inv = Inventory((gpu(0, "MI300X", "SPX"),))
    demands = [demand("a", 10, 8, 1, tps=(1,), share=0.5)]
    policy = PlannerPolicy()
    specs = planner_module.gpu_specs(inv)
    layouts = mode_slots(inv, specs, policy, {0: C.SPX}, {0: [C.SPX, C.CPX]})
    empty = Packing({}, items_for(demands), {}, build_slots(inv, {0: C.SPX}, specs, policy))
    out = improve(empty, 16, {0: C.SPX}, layouts)
    assert out.modes == {0: C.CPX} and out.placed == 16
    _feasible(out.packing)
    assert improve(empty, 16, {0: C.SPX}, {0: {C.SPX: layouts[0][C.SPX]}}).placed == 4  # without CPX: 2 replicas


def test_the_step_leaves_every_tenant_its_cus():
    """One SPX MI300X (304 CUs): two replicas with a 0.5 share take 152 CUs each, so a tenant
    without a share (1 CU at least) no longer fits beside them although bytes and shares
    would (problem.cu_cost, the launcher's rule). The step places the two shares (priority 5)
    and leaves the priority-0 tenant out."""
    inv = Inventory((gpu(0, "MI300X", "SPX"),))
    demands = [demand("a", 10, 2, 5, tps=(1,), share=0.5), demand("b", 2, 1, 0, tps=(1,))]
    policy = PlannerPolicy()
    specs = planner_module.gpu_specs(inv)
    layouts = mode_slots(inv, specs, policy, {0: C.SPX}, {0: [C.SPX]})
    empty = Packing({}, items_for(demands), {}, build_slots(inv, {0: C.SPX}, specs, policy))
    out = improve(empty, 13, {0: C.SPX}, layouts)
    assert out.placed == 12 and [i.instance_id for i in out.packing.unplaced] == ["b-0"]
    _feasible(out.packing)


def test_the_budget_sets_the_moves_not_the_clock():
    """Half a second or more of budget: every move; less: proportionally fewer (a counted
    amount, so one budget always gives one plan)."""
    assert moves_for(0.5) == moves_for(2.0) == moves_for(20.0) == MAX_MOVES
    assert moves_for(0.1) == MAX_MOVES // 5 and moves_for(0.0) == 0
    inv, demands, policy = cpx_case(106)
    found, bound, layouts = _layout_search(inv, demands, policy)
    assert improve(found.packing, bound, found.modes, layouts, max_moves=0).placed == found.placed
