"""From the fast first pass to an optimum over the real feasible set (pure, deterministic).

The first pass (planner.py) proves its plan under placement rules that keep the search small
(problem.py rules 1-3: smallest tp that fits, one GPU per model that one GPU can hold,
spanning ranks one per GPU on the coarsest layout). The hardware imposes none of them: an
instance may take any tp its demand allows, on any distinct partitions of one XGMI hive.
Those rules can lose placements (issue 19: on 2 x MI300X a 103 GiB model at tp=2 with one
rank per GPU fits beside two 121.5 GiB replicas, and the rules say it does not).
So, unless the operator chose the rules (``PlannerPolicy.prefer_local_tp``):
1. the final fill (fill.py) places whatever still fits the room left, with any tp;
2. the surrogate knapsack over the full set bounds the optimum; a plan that reaches the
   bound is proven optimal over the full set at once (the common case);
3. otherwise CP-SAT solves the counts model over the full set (exact.py with
   ``Problem.full``), started from the plan so far and limited in deterministic time, and
   the least-disruption phase keeps what runs where it can; the final fill runs again.
The SolverInfo's bound and gap are then against the full set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpu_sharing.planner.decode import solution_from_packing, to_packing
from gpu_sharing.planner.exact import solve_least_disruption, solve_placed_priority
from gpu_sharing.planner.fill import fill_free_room, placed_weight
from gpu_sharing.planner.packing import Packing
from gpu_sharing.planner.problem import Problem, build_problem, narrow, total_weight
from gpu_sharing.planner.solution import gap
from gpu_sharing.planner.surrogate import surrogate
from gpu_sharing.planner.types import PlannerPolicy, SolverInfo

FULL_SHARE = 0.15
"""Share of the time budget (as CP-SAT deterministic time) for the full-set search."""
FULL_MAX_RANK_VARS = 1500
"""Above this the counts model's build alone takes longer than the budget allows (measured:
about 2,500 variables, 8 CPX GPUs x 40 classes, take 0.9 s to build in Python)."""
FULL_DISRUPTION_SHARE = 0.05
FULL_RETRY_SHARE = 0.35
"""Share of the time budget for the full-set search run again without its hint (see widen)."""


@dataclass(frozen=True)
class Widened:
    modes: dict
    memory: dict
    packing: Packing
    info: SolverInfo




def rank_variables(prob: Problem) -> int:
    """Rank variables the counts model would have (what its build and search time grow with)."""
    return sum(len(g.layouts) * g.slots for g in prob.gpus) * len(prob.classes)


def _search_space(full: Problem, modes, memory) -> tuple[Problem | None, str]:
    """The full problem when it is small; else the full set at the modes of the plan it starts
    from (the first pass's, or a re-plan's kept plan; tp and rank placement still free); else
    nothing (the plan keeps its gap against the full bound)."""
    if rank_variables(full) <= FULL_MAX_RANK_VARS:
        return full, "every layout"
    fixed = {g.gpu: tuple(o for o, lay in enumerate(g.layouts)
                          if (lay.compute, lay.memory) == (modes[g.gpu], memory[g.gpu]))[:1] for g in full.gpus}
    if all(fixed.values()):
        at_modes = narrow(full, fixed)
        if rank_variables(at_modes) <= FULL_MAX_RANK_VARS:
            return at_modes, "the starting plan's modes"
    return None, f"more than {FULL_MAX_RANK_VARS} rank variables"


def widen(inventory, demands, current, policy: PlannerPolicy, modes, memory, packing: Packing,
          info: SolverInfo, full_bound: int | None = None) -> Widened:
    """The first pass's plan, improved and proven (or given a gap) over the full feasible set.
    ``full_bound``: a bound over the full set already known (the pattern LP's, after the
    layout search), kept when it is below the surrogate's."""
    if not packing.unplaced:
        return Widened(modes, memory, packing, info)
    packing = fill_free_room(packing, policy)
    placed = placed_weight(packing)
    everything = total_weight(demands)
    if placed >= everything:
        return Widened(modes, memory, packing, replace(
            info, objective=float(placed), bound=float(everything), gap=0.0,
            status=f"{info.status}; every replica placed after the final fill"))
    full = build_problem(inventory, demands, policy, full=True)
    bound = min(surrogate(full).bound, everything, everything if full_bound is None else max(full_bound, placed))
    if placed >= bound:
        return Widened(modes, memory, packing, replace(
            info, objective=float(placed), bound=float(bound), gap=0.0,
            status=f"{info.status}; optimal over the full feasible set (bound {bound})"))
    search, scope = _search_space(full, modes, memory)
    if search is None:
        return Widened(modes, memory, packing, replace(
            info, objective=float(placed), bound=float(bound), gap=gap(placed, bound),
            status=f"{info.status}; full feasible set: bound {bound}, search skipped ({scope})"))
    hint = solution_from_packing(search, inventory, modes, packing)
    res = solve_placed_priority(search, hint, policy.time_budget_s * FULL_SHARE, at_most=bound)
    if res.status != "OPTIMAL" and (res.solution is None or res.objective <= placed):
        # CP-SAT follows a hint's branches first: on 2-GPU nodes (tests/planner/test_exact.py) the
        # hinted search ended its deterministic time at bound 7 or 8 while the same model without
        # the hint proved the hinted value in 0.1-0.2 s of wall time (with a little more
        # deterministic time than the first search's). So a search that neither improves nor
        # proves runs once more without the hint (the model is small: FULL_MAX_RANK_VARS).
        again = solve_placed_priority(search, None, policy.time_budget_s * FULL_RETRY_SHARE, at_most=bound)
        again = replace(again, wall_time_s=again.wall_time_s + res.wall_time_s)
        if again.status == "OPTIMAL" or (again.solution is not None and again.objective > placed):
            res = again
    if scope != "every layout" and res.solution is not None:
        res = replace(res, bound=max(bound, res.objective))  # a bound at fixed modes bounds nothing else
    wall = info.wall_time_s + res.wall_time_s
    if res.solution is not None:
        bound = min(bound, max(res.bound, res.objective))
    if res.solution is None or res.objective <= placed:
        bound = max(bound, placed)
        verdict = "proved it optimal" if placed >= bound else f"{res.status.lower()}, best bound {bound}"
        return Widened(modes, memory, packing, replace(
            info, objective=float(placed), bound=float(bound), gap=gap(placed, bound), wall_time_s=wall,
            status=f"{info.status}; full feasible set ({scope}): cp-sat {verdict}"))
    solution = res.solution
    if current:
        second = solve_least_disruption(search, res.objective, current, solution,
                                        policy.time_budget_s * FULL_DISRUPTION_SHARE)
        if second.solution is not None:
            solution = second.solution
        wall += second.wall_time_s
    chosen = {g.gpu: g.layouts[solution.layout[g.gpu]] for g in search.gpus}
    modes = {g: lay.compute for g, lay in chosen.items()}
    memory = {g: lay.memory for g, lay in chosen.items()}
    packing = fill_free_room(to_packing(search, solution, demands, current), policy)
    placed = placed_weight(packing)
    bound = max(bound, placed)
    return Widened(modes, memory, packing, SolverInfo(
        "cp-sat", float(placed), float(bound), gap(placed, bound), wall,
        f"{info.status}; full feasible set ({scope}): cp-sat {res.status.lower()} placed {placed} "
        f"(starting plan {int(info.objective)}), bound {bound}"))
