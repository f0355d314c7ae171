"""Same input, same plan: deterministic work limits decide, never the wall clock (issue 19, item 5).

No test here measures time: speed is shown by benchmarks/planner.py. What is checked is that
the result does not depend on the wall-clock guards or on the time budget where no exact
model runs, and that the work the search does on a large node is bounded by counters."""

from __future__ import annotations

import random
from dataclasses import replace

from builders import demand, gpu
from reference_optimum import check_plan

from gpu_sharing.hardware.inventory import Inventory, PartitionRef
import gpu_sharing.planner.pattern_master as pattern_master
from gpu_sharing.planner import exact, plan
from gpu_sharing.planner.layout_search import MAX_EVALUATIONS
from gpu_sharing.planner.types import PlannerPolicy, RunningInstance


def _timeless(p):
    return replace(p, solver=replace(p.solver, wall_time_s=0.0))


def _shares_node(seed: int):
    rng = random.Random(seed)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), rng.choice(["SPX", "CPX"])) for i in range(8)))
    demands = [demand(f"m{i}", rng.choice([2, 6, 14, 30, 60, 140]), rng.randint(1, 8), rng.randint(0, 9),
                      share=rng.choice([0.1, 0.2, 0.25, 0.5])) for i in range(12)]
    return inv, demands


def test_exact_phases_give_the_same_plan_whatever_the_wall_clock_guard(monkeypatch):
    """A re-plan runs SCIP and CP-SAT (first pass, least disruption, full set). With the
    wall-clock guards 10x or 1000x the deterministic limits the plan is the same: the
    deterministic limits stop the solvers, so a loaded machine gets the same answer."""
    inv = Inventory(tuple(gpu(i, "MI300X", "CPX") for i in range(2)))
    demands = [demand("a", 30, 4, 5), demand("b", 6, 8, 2), demand("c", 14, 6, 7, share=0.5), demand("d", 60, 2, 9),
               demand("e", 20, 4, 0)]
    # where b-0 and e-0 run, the re-plan's keeping layout search leaves a gap, so the exact phases run
    running = [RunningInstance("b-0", "b", 0, "f1", (PartitionRef(0, 4),), demands[1].bytes_per_rank_by_tp[1]),
               RunningInstance("e-0", "e", 0, "f1", (PartitionRef(1, 7),), demands[4].bytes_per_rank_by_tp[1])]
    policy = PlannerPolicy()
    plans = []
    for factor in (exact.WALL_GUARD_FACTOR, 1000.0):
        monkeypatch.setattr(exact, "WALL_GUARD_FACTOR", factor)
        plans.append(_timeless(plan(inv, demands, running, policy)))
    assert plans[0] == plans[1]
    assert plans[0].solver.name == "scip-configurations"  # the exact phases ran (the keeping search left a gap)
    assert check_plan(inv, demands, policy, plans[0]) == []


def test_layout_search_plan_does_not_depend_on_the_time_budget():
    """With nothing running on an 8-GPU node the layout search decides by counted work alone:
    a 1 s budget and one just below pattern_master.THOROUGH_BUDGET_S give the same plan, and
    it is feasible (the pattern step after it has fixed deterministic limits below that budget,
    and does not run below pattern_master.MIN_BUDGET_S)."""
    inv, demands = _shares_node(8)  # the searches use their whole work limits and keep a gap: the budget could matter
    short = plan(inv, demands, [], PlannerPolicy(time_budget_s=1.0))
    long = plan(inv, demands, [], PlannerPolicy(time_budget_s=pattern_master.THOROUGH_BUDGET_S - 1))
    assert _timeless(short) == _timeless(long) and short.solver.gap > 0
    assert check_plan(inv, demands, PlannerPolicy(), short) == []


def test_a_thorough_budget_prices_exactly_and_gives_cp_sat_more_time(monkeypatch):
    """From THOROUGH_BUDGET_S up the pattern step runs with its thorough limits (exact pricing
    tables, 5x the pricing cells and CP-SAT's time), the same ones whatever the budget above:
    10 s and 20 s give the same plan, and it is feasible."""
    seen = []
    real_generate, real_solve = pattern_master.generate, pattern_master.solve_integer

    def generate(*args, **kwargs):
        seen.append(("generate", kwargs["max_pricing_cells"], kwargs["table_cells"]))
        return real_generate(*args, **kwargs)

    def solve_integer(space, columns, hint, at_least, at_most, deterministic_s, *rest, **kwargs):
        seen.append(("mip", deterministic_s))
        return real_solve(space, columns, hint, at_least, at_most, deterministic_s, *rest, **kwargs)
    monkeypatch.setattr(pattern_master, "generate", generate)
    monkeypatch.setattr(pattern_master, "solve_integer", solve_integer)
    inv, demands = _shares_node(8)
    plans = [plan(inv, demands, [], PlannerPolicy(time_budget_s=b)) for b in (pattern_master.THOROUGH_BUDGET_S, 20.0)]
    assert _timeless(plans[0]) == _timeless(plans[1])
    assert check_plan(inv, demands, PlannerPolicy(), plans[0]) == []
    factor = pattern_master.THOROUGH_FACTOR
    assert ("generate", pattern_master.MAX_PRICING_CELLS * factor, pattern_master.THOROUGH_TABLE_CELLS) in seen
    assert ("mip", pattern_master.MIP_DETERMINISTIC_S * factor) in seen  # this node leaves a gap for the MIP
    seen.clear()
    plan(inv, demands, [], PlannerPolicy())  # the default budget: the default limits
    assert seen[0] == ("generate", pattern_master.MAX_PRICING_CELLS, None)


def test_work_on_a_large_node_is_bounded_by_counters():
    """8 GPUs, 12 models with compute shares: the layout search packs at most MAX_EVALUATIONS
    (layout, chosen set) pairs and no exact model is built (the status names the work done), so the budget is
    kept by construction rather than by a clock."""
    for seed in (1, 2):  # one keeps a gap at the work limit, one reaches the knapsack bound early
        inv, demands = _shares_node(seed)
        p = plan(inv, demands, [], PlannerPolicy())
        assert p.solver.name == "layout-search"
        packed = int(p.solver.status.split("(")[1].split(" layouts or choices packed")[0])
        assert 1 <= packed <= MAX_EVALUATIONS
        assert p.solver.objective <= p.solver.bound
