"""benchmarks/machine_speed.py: its two workloads are fixed and do the work they claim, so that
their times divide the planner's across machines (docs/planner-benchmark.md)."""

from __future__ import annotations

from ortools.sat.python import cp_model

import machine_speed
from planner import make_case
from plan_digest import describe

from gpu_sharing.planner.pattern_master import MIN_BUDGET_S, MIP_DETERMINISTIC_S
from gpu_sharing.planner.planner import plan


def test_the_cpsat_workload_spends_its_whole_deterministic_limit():
    """Solved to optimality, it would time the model and not the machine's CP-SAT speed."""
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.max_deterministic_time = machine_speed.CPSAT_DETERMINISTIC_S
    assert s.Solve(machine_speed.cpsat_model()) == cp_model.FEASIBLE
    assert s.deterministic_time >= 0.9 * machine_speed.CPSAT_DETERMINISTIC_S
    assert machine_speed.CPSAT_DETERMINISTIC_S == MIP_DETERMINISTIC_S  # the planner's own searches


def test_the_python_workload_is_one_fixed_plan_without_cpsat():
    """Same case every time (a fixed stream), and a budget below the pattern step's: no CP-SAT."""
    first, second = machine_speed.python_case(make_case), machine_speed.python_case(make_case)
    assert first[2].time_budget_s == 0.5 < MIN_BUDGET_S
    assert describe(plan(*first[:2], [], first[2]), first[1]) == describe(plan(*second[:2], [], second[2]), second[1])
