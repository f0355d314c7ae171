"""Honest disruption: the preemption policy, the node-wide drain a repartition may need, and
the disruption count on the Plan."""

from __future__ import annotations

from builders import demand, gpu, node
from test_planner import converged, running_from

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner import plan
from gpu_sharing.planner.types import PlannerPolicy, PreemptPolicy


def _spread_pair():
    """x (2 x 61.5 GiB, priority 5) runs one replica per GPU; z (151.5 GiB, tp=1 only) fits
    only if one x replica moves next to the other."""
    inv = node(2)
    x = demand("x", 60, 2, 5, tps=(1,))
    first = plan(inv, [x], [], PlannerPolicy())
    assert {p.gpu for p in first.placements} == {0, 1}
    return converged(inv, first), x, running_from(first, [x])


def test_equal_or_lower_priority_newcomer_never_moves_what_runs():
    inv, x, running = _spread_pair()
    for prio in (0, 5):
        p = plan(inv, [x, demand("z", 150, 1, prio, tps=(1,))], running, PlannerPolicy())
        assert p.to_stop == () and p.disruption == 0 and set(p.unchanged) == {"x-0", "x-1"}
        assert [u.model for u in p.unplaceable] == ["z"]
        assert any("planner.preempt: strictly_higher_priority" in w for w in p.warnings)


def test_strictly_higher_priority_newcomer_may_move_a_running_instance():
    inv, x, running = _spread_pair()
    p = plan(inv, [x, demand("z", 150, 1, 6, tps=(1,))], running, PlannerPolicy())
    assert "z-0" in {pl.instance_id for pl in p.placements} and len(p.placements) == 3
    assert p.disruption == 1 and len(p.to_stop) == 1 and not p.warnings


def test_any_gain_and_never_policies():
    inv, x, running = _spread_pair()
    low = [x, demand("z", 150, 1, 0, tps=(1,))]
    gain = plan(inv, low, running, PlannerPolicy(preempt=PreemptPolicy.ANY_GAIN))
    assert len(gain.placements) == 3 and gain.disruption == 1
    high = [x, demand("z", 150, 1, 9, tps=(1,))]
    never = plan(inv, high, running, PlannerPolicy(preempt=PreemptPolicy.NEVER))
    assert never.to_stop == () and [u.model for u in never.unplaceable] == ["z"]


def _idle_cpx_gpu():
    """a runs on GPU 0 (SPX); GPU 1 is idle in CPX; a 150 GiB tp=1 newcomer needs GPU 1 in SPX."""
    inv = Inventory((gpu(0, "MI300X", "SPX"), gpu(1, "MI300X", "CPX")))
    a = demand("a", 40, 1, 5, tps=(1,), gpus=(0,))
    first = plan(inv, [a], [], PlannerPolicy())
    return converged(inv, first), a, running_from(first, [a])


def test_repartition_without_drain_keeps_other_gpus_running():
    inv, a, running = _idle_cpx_gpu()
    p = plan(inv, [a, demand("big", 150, 1, 0, tps=(1,))], running, PlannerPolicy())
    assert [t.gpu for t in p.to_repartition] == [1] and p.to_repartition[0].compute_mode == C.SPX
    assert p.unchanged == ("a-0",) and not p.drain_required and p.drained == () and p.disruption == 0


def test_drain_counts_every_running_instance_and_blocks_a_low_priority_gain():
    inv, a, running = _idle_cpx_gpu()
    policy = PlannerPolicy(repartition_drains_node=True)
    low = plan(inv, [a, demand("big", 150, 1, 5, tps=(1,))], running, policy)  # equal priority: no drain
    assert low.to_repartition == () and low.unchanged == ("a-0",) and not low.drain_required
    assert [u.model for u in low.unplaceable] == ["big"] and any("drain" in w for w in low.warnings)
    high = plan(inv, [a, demand("big", 150, 1, 9, tps=(1,))], running, policy)
    assert high.drain_required and high.drained == ("a-0",) and high.disruption == 1
    assert "a-0" in high.to_stop and "a-0" in {x.instance_id for x in high.to_start} and high.unchanged == ()
    stop = next(x for x in high.actions if x.kind.value == "stop" and x.target == "a-0")
    assert "drain" in stop.detail


def test_an_instance_only_the_full_set_allows_is_kept_on_replan():
    """b runs at tp=2 across both GPUs (the placement the first pass's rules do not make); a
    later re-plan with a priority-0 newcomer must keep it, not restart it under the rules."""
    from builders import GIB
    from gpu_sharing.planner.types import ModelDemand

    a = ModelDemand("a", 2, 9, {1: int(121.5 * GIB), 2: int(62 * GIB)}, "f1")
    b = ModelDemand("b", 1, 0, {1: int(103 * GIB), 2: int(51.5 * GIB)}, "f1")
    inv = node(2)
    first = plan(inv, [a, b], [], PlannerPolicy())
    assert len(first.placements) == 3
    again = plan(converged(inv, first), [a, b, demand("late", 40, 1, 0, tps=(1,))], running_from(first, [a, b]),
                 PlannerPolicy())
    assert again.to_stop == () and set(again.unchanged) == {"a-0", "a-1", "b-0"}


def test_replan_keeping_search_repartitions_an_idle_gpu_without_building_exact_models(monkeypatch):
    """The re-plan's layout search keeps a-0 where it runs and may change only GPU 1 (nothing
    runs there); its plan reaches the full-set knapsack bound, so it is proven optimal and
    neither SCIP's nor CP-SAT's model is built."""
    from gpu_sharing.planner import first_pass as planner_module  # where the exact models are called

    def _never(*_a, **_k):
        raise AssertionError("an exact model was built for a plan the keeping search proved")

    monkeypatch.setattr(planner_module, "solve_by_configurations", _never)
    monkeypatch.setattr(planner_module, "solve_placed_priority", _never)
    monkeypatch.setattr(planner_module, "solve_least_disruption", _never)
    inv, a, running = _idle_cpx_gpu()
    p = plan(inv, [a, demand("big", 150, 1, 0, tps=(1,)), demand("small", 6, 3, 2)], running, PlannerPolicy())
    assert p.solver.name == "layout-search" and p.solver.gap == 0 and not p.unplaceable
    assert p.unchanged == ("a-0",) and p.to_stop == () and p.disruption == 0
    assert [t.gpu for t in p.to_repartition] == [1] and p.to_repartition[0].compute_mode == C.SPX


def test_replan_applies_a_pinned_memory_mode_when_reload_is_allowed():
    """The keeping search never changes a memory mode, so a re-plan with a pinned NPS4 to apply
    (allow_driver_reload) goes to the phases that weigh the reload: the pin is honoured."""
    from gpu_sharing.hardware.modes import MemoryPartitionMode as M
    from gpu_sharing.planner.types import GpuPolicy

    inv = node(2)
    a = demand("a", 14, 2, 5)
    first = plan(inv, [a], [], PlannerPolicy())
    policy = PlannerPolicy(gpus=(GpuPolicy(0, C.CPX, M.NPS4), GpuPolicy(1, C.CPX, M.NPS4)), allow_driver_reload=True)
    p = plan(converged(inv, first), [a], running_from(first, [a]), policy)
    assert {t.gpu: (t.compute_mode, t.memory_mode) for t in p.gpus} == {0: (C.CPX, M.NPS4), 1: (C.CPX, M.NPS4)}
    assert len(p.placements) == 2 and not p.unplaceable


def test_random_replans_with_a_priority_zero_newcomer_never_stop_what_runs():
    """Converged 2-GPU nodes, then a priority-0 newcomer: no plan stops or moves an instance of
    an unchanged model for it (the benchmark's `unjust.` column, as a property; on these seeded
    nodes no higher-priority gain justifies a move either), every plan passes the independent
    check, and none places less than the plan it re-plans."""
    import random

    from reference_optimum import check_plan

    rng = random.Random(11)
    for _ in range(12):
        inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), rng.choice(["SPX", "CPX"])) for i in range(2)))
        demands = [demand(f"m{i}", rng.choice([2, 6, 14, 30, 60, 140]), rng.randint(1, 4), rng.randint(0, 9))
                   for i in range(5)]
        first = plan(inv, demands, [], PlannerPolicy())
        again = [*demands, demand("newcomer", rng.choice([4, 16, 40]), 1, 0)]
        p = plan(converged(inv, first), again, running_from(first, demands), PlannerPolicy())
        assert p.to_stop == () and len(p.unchanged) == len(first.placements)
        assert check_plan(converged(inv, first), again, PlannerPolicy(), p) == []
        placed = sum(d.priority + 1 for d in again for x in p.placements if x.model == d.name)
        assert placed >= sum(d.priority + 1 for d in demands for x in first.placements if x.model == d.name)


def test_large_node_replan_with_a_gap_builds_no_exact_model(monkeypatch):
    """8 x MI300X, one 171.5 GiB x replica per GPU: a 21.5 GiB tp=1 newcomer fits the free bytes
    in all but no GPU's, so the keeping search leaves a gap. Above 1,500 full-set rank variables
    (planner.LAYOUT_FIRST_EXACT_MAX_RANK_VARS; first_pass.py builds them) neither SCIP's nor CP-SAT's model is built after
    it: at priority 0 the keeping plan stands; at priority 9 the first pass's greedy still
    evicts an x replica (priority 5) for it."""
    from gpu_sharing.planner import first_pass as planner_module  # where the exact models are called

    def _never(*_a, **_k):
        raise AssertionError("an exact model was built on a large node's re-plan")

    inv = node(8)
    base = [demand("x", 170, 8, 5, tps=(1,))] + [demand(f"s{i}", 2, 1, 1) for i in range(4)]
    first = plan(inv, base, [], PlannerPolicy())
    for name in ("solve_by_configurations", "solve_placed_priority", "solve_least_disruption"):
        monkeypatch.setattr(planner_module, name, _never)
    inv, running = converged(inv, first), running_from(first, base)
    low = plan(inv, [*base, demand("n", 20, 1, 0, tps=(1,))], running, PlannerPolicy())
    assert low.solver.gap > 0 and low.to_stop == () and [u.model for u in low.unplaceable] == ["n"]
    high = plan(inv, [*base, demand("n", 20, 1, 9, tps=(1,))], running, PlannerPolicy())
    assert "n-0" in {x.instance_id for x in high.placements} and [u.model for u in high.unplaceable] == ["x"]
    assert [i for i in high.to_stop if i.startswith("x")] == ["x-0"]


def test_large_node_replan_says_when_the_policy_forbids_a_better_plan(monkeypatch):
    """8 x MI300X, one 61.5 GiB x replica per GPU (priority 5): a 151.5 GiB tp=1 newcomer fits
    only if one x replica moves next to another. Above 1,500 full-set rank variables no exact
    model is built (planner.LAYOUT_FIRST_EXACT_MAX_RANK_VARS; first_pass.py builds them), yet the plan that moves an x
    replica is still found and held back by planner.preempt, and the plan says so; any_gain
    takes it."""
    from gpu_sharing.planner import first_pass as planner_module  # where the exact models are called

    def _never(*_a, **_k):
        raise AssertionError("an exact model was built on a large node's re-plan")

    for name in ("solve_by_configurations", "solve_placed_priority", "solve_least_disruption"):
        monkeypatch.setattr(planner_module, name, _never)
    inv = node(8)
    base = [demand("x", 60, 8, 5, tps=(1,))] + [demand(f"s{i}", 2, 1, 1) for i in range(4)]
    first = plan(inv, base, [], PlannerPolicy())
    assert len({p.gpu for p in first.placements if p.model == "x"}) == 8
    inv, running = converged(inv, first), running_from(first, base)
    for prio in (0, 5):
        p = plan(inv, [*base, demand("z", 150, 1, prio, tps=(1,))], running, PlannerPolicy())
        assert p.to_stop == () and p.disruption == 0 and [u.model for u in p.unplaceable] == ["z"]
        assert any("would stop or move x-" in w and "planner.preempt: strictly_higher_priority" in w
                   for w in p.warnings)
    gain = plan(inv, [*base, demand("z", 150, 1, 0, tps=(1,))], running, PlannerPolicy(preempt=PreemptPolicy.ANY_GAIN))
    assert "z-0" in {x.instance_id for x in gain.placements} and gain.unplaceable == () and gain.disruption >= 1
