"""plan(): choose partition modes and placements together (pure, deterministic).

The pipeline (docs/architecture.md, "Planner pipeline"):
0. with nothing running (and no prefer_local_tp): the layout search over the full feasible
   set (layout_search.py); a plan that reaches the full-set knapsack bound is proven and done,
   otherwise it goes to the full-set search (fullset.py) on small nodes, or keeps its gap;
   a re-plan (no prefer_local_tp) first runs the same search with every protected running
   instance kept where it is (_keep_search): proven at the bound, it is the plan; otherwise
   the steps below must place more priority to replace it (on large nodes only step 1's
   greedy runs: LAYOUT_FIRST_EXACT_MAX_RANK_VARS);
Steps 1-3 are the fast first pass (first_pass.py):
1. greedy at the current modes (packing.py: keep what runs, best fit, priority eviction;
   priority-first and first-fit-decreasing orders). When it places every replica it is
   optimal and disturbs nothing: the plan is done.
2. proof of the most placed priority on the problem dominance.py reduces (most GPUs fixed
   to SPX, which loses nothing): the surrogate knapsack's choice packed first-fit
   decreasing (surrogate.py), else the configuration model (mip.py, SCIP), else CP-SAT
   (exact.py) if a gap remains. If the greedy plan already reaches it, the greedy plan wins.
3. otherwise, when instances run, the least-disruptive plan with that priority (exact.py
   phase 2), and decode.py names its instances.
The Plan's SolverInfo says which solver produced it, the objective (placed priority), the
proven bound and the gap. Same input, same plan: every order is sorted, CP-SAT runs one
worker under a deterministic time limit, SCIP stops on a node limit, and their wall-clock
limits are guards far above (exact.WALL_GUARD_FACTOR); the layout search counts its work.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.planner.assemble import to_plan
from gpu_sharing.planner.exact import keepable
from gpu_sharing.planner.fill import choose_free, fill_free_room, placed_weight
from gpu_sharing.planner.first_pass import (candidate_modes, gpu_specs, greedy_at, memory_targets, run_first_pass,
                                            stay_in_current_modes)
from gpu_sharing.planner.solution import gap
from gpu_sharing.planner.full_search import search_full_set
from gpu_sharing.planner.fullset import rank_variables, widen
from gpu_sharing.planner.improve import improve as ruin_and_recreate, moves_for
from gpu_sharing.planner.packing import Packing, SpanRules, span_rules
from gpu_sharing.planner.preempt import disturbed, explain, justified, protected
from gpu_sharing.planner.problem import build_problem
from gpu_sharing.planner.reasons import policy_warnings
from gpu_sharing.planner.spread import spread
from gpu_sharing.planner.types import ModelDemand, Plan, PlannerPolicy, PreemptPolicy, RunningInstance, SolverInfo

LAYOUT_FIRST_EXACT_MAX_RANK_VARS = 1500
"""After the layout search, the full-set CP-SAT search (fullset.py) runs only on problems with
at most this many rank variables over every layout (1-2 GPUs): on 8-GPU nodes it found
nothing better than the layout search in its share of the budget (measured on the
benchmark's shares and NPS families) and cost 1-3 s of model building and search.
The same size rule holds after a re-plan's keeping search: above it only the first pass's
greedy (which evicts for higher priority) runs, not SCIP's proof nor the CP-SAT phases. Measured
on the benchmark's 8-GPU re-plans (seeds 1-3, 10 cases each): those models found a plan that
plan() could take over the keeping plan in 0 of 15 cases with a gap, and cost 150-1,300 ms."""


MOVING_MOVES = 20
"""Ruin-and-recreate moves of a large node's re-plan with nothing fixed (_moving_search): it
only has to show whether a plan placing more exists for planner.preempt to judge."""


def plan(inventory: Inventory, demands: Sequence[ModelDemand], current: Sequence[RunningInstance],
         policy: PlannerPolicy) -> Plan:
    exact_after = True  # the full-set search (fullset.py) after the first pass
    kept_plan, moved = None, None
    specs = gpu_specs(inventory)
    if (current and not policy.prefer_local_tp  # a re-plan: first what keeps every protected instance
            and memory_targets(inventory, policy, specs) == {g.index: g.memory_mode for g in inventory.gpus}):
        kept_plan, kept_parts, kept_vars = _keep_search(inventory, demands, current, policy)
        if kept_plan.solver.gap == 0:
            return kept_plan
        exact_after = kept_vars <= LAYOUT_FIRST_EXACT_MAX_RANK_VARS
    if not policy.prefer_local_tp and not current:  # nothing runs: the layout search over the full set first
        modes, memory, packing, info, rules, rank_vars = _layout_first(inventory, demands, policy)
        exact_after = info.gap > 0 and rank_vars <= LAYOUT_FIRST_EXACT_MAX_RANK_VARS
    else:
        modes, memory, packing, info, rules = run_first_pass(inventory, demands, current, policy,
                                                          _placed(kept_plan, demands) if kept_plan else -1, exact_after,
                                                          LAYOUT_FIRST_EXACT_MAX_RANK_VARS)
        if kept_plan is not None and placed_weight(packing) <= _placed(kept_plan, demands):
            if not exact_after:  # the exact models are not built: ruin and recreate may move what runs
                greedy_note = f"the greedy at the current modes placed {placed_weight(packing)}"
                moved = _moving_search(inventory, demands, policy, kept_parts, kept_plan.solver.bound, greedy_note)
                if moved is None:  # nothing better found: the plan that keeps what runs stands
                    return replace(kept_plan, solver=replace(kept_plan.solver, status=f"{kept_plan.solver.status}; "
                                                             f"{greedy_note}; moving running instances too: +0"))
                modes, memory, packing, info = moved  # the policy below judges what it stops or moves
            else:
                modes, memory, packing, info, rules = kept_parts  # the full-set search starts from the better plan
    first = None
    if policy.prefer_local_tp:  # the operator chose the rules: maximal under them, proven against them
        if packing.unplaced:  # what the full set would start from, for _name_the_rule
            first = (modes, memory, copy.deepcopy(packing), info)
        packing = fill_free_room(packing, policy, rules)
    elif exact_after:
        w = widen(inventory, demands, current, policy, modes, memory, packing, info,
                  int(info.bound) if info.name == "layout-search" else None)  # its bound is over the full set
        modes, memory, packing, info = w.modes, w.memory, w.packing, w.info
    modes, packing = _second_objective(inventory, current, policy, modes, memory, packing, rules,
                                       may_repartition=not (policy.repartition_drains_node and current))
    warnings = policy_warnings(inventory, policy)
    candidate = _name_the_rule(inventory, demands, current, policy, first, packing,
                               to_plan(inventory, demands, current, policy, modes, memory, packing, info, warnings))
    guard = protected(current, demands)
    hit = disturbed(candidate, guard)
    if kept_plan is not None and _placed(kept_plan, demands) >= _placed(candidate, demands) and (
            hit or _placed(kept_plan, demands) > _placed(candidate, demands)):
        return kept_plan  # as much priority, and every protected instance stays
    if not hit or policy.preempt == PreemptPolicy.ANY_GAIN:
        return candidate
    # after the moving search, the greedy that keeps what runs has run (and placed no more)
    keeping = kept_plan if moved else _keeping_plan(inventory, demands, current, policy, candidate.solver)
    if kept_plan is not None and _placed(kept_plan, demands) >= _placed(keeping, demands):
        keeping = kept_plan  # as much priority, and it disturbs no protected instance
    also = set(disturbed(keeping, guard))  # stopped anyway: evicted for higher priority, or a forced drain
    extra = [iid for iid in hit if iid not in also]
    if not extra or justified(candidate, keeping, extra, guard, demands, policy):
        return candidate
    return replace(keeping, warnings=keeping.warnings + (explain(candidate, extra, policy),))


def _moving_search(inventory, demands, policy: PlannerPolicy, kept_parts, bound: float, note: str):
    """A large node's re-plan builds no exact model (LAYOUT_FIRST_EXACT_MAX_RANK_VARS), and
    those were what found the plans that stop or move running instances for more priority. So
    that ``planner.preempt`` still decides (and ``plan`` still says when it forbids a better
    plan), ruin and recreate (improve.py) runs once more from the keeping search's plan with
    nothing fixed: any instance, running or not, may move, at the current modes. Counted moves
    from a fixed seed (deterministic), 1-3 ms each. Measured on the benchmark's 8-GPU re-plans
    (seeds 1-3, 90 re-plans): finds a plan placing more in 6, for +7 ms p50 and +7 to +20 ms p95
    of the replan family (min of 3 runs per case, under load).
    Returns (modes, memory, packing, info) when it places more than the keeping plan, else None."""
    modes, memory, packing, info, _rules = kept_parts
    # no mode switches (layouts None: a GPU's compute mode stays) and stop at the first gain:
    # the question is whether more is placeable at all, and the whole-GPU moves cost 2-3x more
    moved = ruin_and_recreate(packing, min(int(bound), placed_weight(packing) + 1), modes, None, frozenset(),
                              min(MOVING_MOVES, moves_for(policy.time_budget_s)))
    if moved.gained <= 0:
        return None
    placed = placed_weight(moved.packing)
    return moved.modes, memory, moved.packing, SolverInfo(
        "layout-search", float(placed), float(max(bound, placed)), gap(placed, int(bound)), 0.0,
        f"{info.status}; {note}; moving running instances too (ruin and recreate, nothing fixed): "
        f"+{moved.gained} in {moved.moves} moves")


def _placed(p: Plan, demands: Sequence[ModelDemand]) -> int:
    """Placed priority of a finished plan (its SolverInfo may predate the final fill)."""
    weight = {d.name: d.priority + 1 for d in demands}
    return sum(weight[x.model] for x in p.placements)


def _name_the_rule(inventory, demands, current, policy: PlannerPolicy, first, packing: Packing, p: Plan) -> Plan:
    """Under ``prefer_local_tp``, a replica the full feasible set would place is kept out by
    that rule, not by priority or GPU count: say so. Either it fits the room left over the
    full set (checked directly), or the full-set step (fullset.py) run on ``first``, the first
    pass's result, exactly as plan() runs it without the rule, places more priority and more
    replicas of its model than the plan does."""
    if not policy.prefer_local_tp or not p.unplaceable:
        return p
    placed_gpus: dict[str, set[int]] = {}
    fits = {}
    for item in packing.unplaced:
        a = choose_free(packing.slots, item, placed_gpus, policy)  # looks only: nothing is occupied
        if a is not None:
            fits[item.model, item.replica] = (a.tp, len({r.gpu for r in a.refs}))
    more: dict[str, tuple[int, int]] = {}
    if first is not None and any((u.model, u.replica) not in fits for u in p.unplaceable):
        full = widen(inventory, demands, current, replace(policy, prefer_local_tp=False), *first).packing
        if placed_weight(full) > placed_weight(packing):
            for model in {u.model for u in p.unplaceable}:
                n_full = sum(1 for a in full.assignments.values() if a.item.model == model)
                n_here = sum(1 for a in packing.assignments.values() if a.item.model == model)
                if n_full > n_here:
                    more[model] = (n_full, placed_weight(full))
    out = []
    for u in p.unplaceable:
        head = u.reason.split("; higher-priority")[0].split("; its room went")[0]
        if (u.model, u.replica) in fits:
            tp, gpus = fits[u.model, u.replica]
            u = replace(u, reason=f"{head}; it fits the room left at tp={tp} on {gpus} GPU(s), which "
                                  "planner.prefer_local_tp rules out (set it to false to place it)")
        elif u.model in more and "planner.prefer_local_tp" not in u.reason:
            n_full, weight = more[u.model]
            u = replace(u, reason=f"{head}; over the full feasible set the plan places {n_full} of its replicas "
                                  f"(placed priority {weight} instead of {placed_weight(packing)}), which "
                                  "planner.prefer_local_tp rules out (set it to false to place it)")
        out.append(u)
    return replace(p, unplaceable=tuple(out))


def _second_objective(inventory, current, policy: PlannerPolicy, modes, memory, packing: Packing, rules: SpanRules,
                      may_repartition: bool):
    """Compute after placed priority: instances about to start move to empty GPUs (spread.py);
    the final fill then runs again, so the plan stays maximal."""
    modes, packing = spread(inventory, policy, modes, memory, packing, {r.instance_id for r in current},
                            may_repartition)
    return modes, fill_free_room(packing, policy, rules if policy.prefer_local_tp else None)


def _keeping_plan(inventory, demands, current, policy: PlannerPolicy, best: SolverInfo) -> Plan:
    """Every running instance that may stay stays: the current modes (no repartition, so no
    drain), what runs kept, the rest packed around it and the final fill."""
    specs = gpu_specs(inventory)
    memory = {g.index: g.memory_mode for g in inventory.gpus}
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    # what may stay is judged over the feasible set the plans were made in: an instance the
    # full-set search placed at tp=2 across GPUs is not restarted because rule 2 would not place it so
    where = prob if policy.prefer_local_tp else build_problem(inventory, demands, policy, full=True)
    modes, packing, _placed = greedy_at(inventory, demands, current, policy, specs, memory, prob, rules,
                                      set(keepable(where, current)))
    packing = fill_free_room(packing, policy, rules if policy.prefer_local_tp else None)
    modes, packing = _second_objective(inventory, current, policy, modes, memory, packing, rules, may_repartition=False)
    placed = placed_weight(packing)
    bound = max(int(best.bound), placed)
    info = SolverInfo("greedy", float(placed), float(bound), gap(placed, bound), best.wall_time_s,
                      f"kept what runs (planner.preempt: {policy.preempt.value}); best plan found placed "
                      f"{int(best.objective)}")
    return to_plan(inventory, demands, current, policy, modes, memory, packing, info, policy_warnings(inventory, policy))


def _keep_search(inventory, demands, current, policy: PlannerPolicy):
    """A re-plan's fast path: the layout search (layout_search.py) with every protected running
    instance kept where it is, its GPUs at their current modes and every GPU at its current
    memory mode (no reload); only GPUs without a kept instance may change compute mode (none
    when a repartition drains the node). It disturbs no protected instance, so it needs no
    least-disruption phase; when it reaches the full-set knapsack bound it is proven optimal
    and the exact models are not built at all. Not run when a pinned memory mode is to be
    applied (plan() checks): that needs a reload, which the exact phases weigh."""
    specs = gpu_specs(inventory)
    memory = {g.index: g.memory_mode for g in inventory.gpus}
    full = build_problem(inventory, demands, policy, full=True)
    guard = protected(current, demands)
    kept = {iid: run for iid, (_ci, run) in keepable(full, current).items() if iid in guard}
    held = {ref.gpu for run in kept.values() for ref in run.partitions}
    candidates = candidate_modes(inventory, policy, specs, memory)
    for g in inventory.gpus:
        if (g.index in held or policy.repartition_drains_node) and g.compute_mode in candidates[g.index]:
            candidates[g.index] = [g.compute_mode]
    bound, found, note, source = search_full_set(inventory, demands, policy, specs, full, candidates, kept)
    rules = span_rules(build_problem(inventory, demands, policy))
    modes, packing = _second_objective(inventory, current, policy, found.modes, memory, found.packing, rules,
                                       may_repartition=not policy.repartition_drains_node)
    info = _layout_info(placed_weight(packing), bound, found.evaluations, "kept what runs; ", note, source)
    plan_ = to_plan(inventory, demands, current, policy, modes, memory, packing, info, policy_warnings(inventory, policy))
    return plan_, (modes, memory, packing, info, rules), rank_variables(full)


def _layout_first(inventory, demands, policy: PlannerPolicy):
    """With nothing running, over the real feasible set: the layout search (layout_search.py)
    packs the full-set knapsack's choice at a few layouts; a plan that reaches the knapsack's
    bound is proven optimal at once. Otherwise its plan goes to the full-set search (fullset.py)
    with the gap. No exact model under the first pass's rules is built: its plans are in the
    full set too, and the search starts from the current modes, as the greedy does."""
    specs = gpu_specs(inventory)
    memory = memory_targets(inventory, policy, specs)
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    full = build_problem(inventory, demands, policy, full=True)
    bound, found, note, source = search_full_set(inventory, demands, policy, specs, full,
                                         candidate_modes(inventory, policy, specs, memory))
    modes, packing = stay_in_current_modes(inventory, policy, specs, prob, rules, found.modes, memory, found.packing)
    info = _layout_info(placed_weight(packing), bound, found.evaluations, "", note, source)
    return modes, memory, packing, info, rules, rank_variables(full)


def _layout_info(placed: int, bound: int, evaluations: int, prefix: str, note: str, source: str) -> SolverInfo:
    name = f"full-set {source} bound"
    verdict = f"optimal: it reaches the {name}" if placed >= bound else f"{name} {bound}"
    return SolverInfo("layout-search", float(placed), float(max(bound, placed)), gap(placed, bound), 0.0,
                      f"{prefix}layout search ({evaluations} layouts or choices packed){note}: {verdict}")
