"""plan(): choose partition modes and placements together (pure, deterministic).

The pipeline (docs/architecture.md, "Planner pipeline"):
0. with nothing running (and no prefer_local_tp): the layout search over the full feasible
   set (layout_search.py); a plan that reaches the full-set knapsack bound is proven and done,
   otherwise it goes to the full-set search (fullset.py) on small nodes, or keeps its gap;
   a re-plan (no prefer_local_tp) first runs the same search with every protected running
   instance kept where it is (_keep_search): proven at the bound, it is the plan; otherwise
   the steps below must place more priority to replace it (on large nodes only step 1's
   greedy runs: LAYOUT_FIRST_EXACT_MAX_RANK_VARS);
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

from gpu_sharing.hardware.catalog import GpuModelSpec, get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.planner.decode import solution_from_packing, to_packing
from gpu_sharing.planner.dominance import from_full, restrict, to_full, to_restricted
from gpu_sharing.planner.assemble import to_plan
from gpu_sharing.planner.fill import choose_free, fill_free_room, placed_weight
from gpu_sharing.planner.reasons import policy_warnings
from gpu_sharing.planner.spread import spread
from gpu_sharing.planner.preempt import disturbed, explain, justified, protected
from gpu_sharing.planner.fullset import rank_variables, widen
from gpu_sharing.planner.full_search import search_full_set
from gpu_sharing.planner.improve import improve as ruin_and_recreate, moves_for
from gpu_sharing.planner.exact import keepable, solve_least_disruption, solve_placed_priority
from gpu_sharing.planner.solution import SolveResult
from gpu_sharing.planner.surrogate import pack_surrogate, surrogate
from gpu_sharing.planner.mip import solve_by_configurations
from gpu_sharing.planner.packing import Packing, SpanRules, _occupy, build_slots, items_for, pack, span_rules
from gpu_sharing.planner.problem import Problem, build_problem, coarsest, narrow, total_weight
from gpu_sharing.planner.types import ModelDemand, Plan, PlannerPolicy, PreemptPolicy, RunningInstance, SolverInfo

SURROGATE_SHARE = 0.025
SCIP_SHARE = 0.5
CPSAT_SHARE = 0.05
DISRUPTION_SHARE = 0.1
"""Shares of the time budget: the surrogate's CP-SAT assignment, SCIP's proof, CP-SAT's
second opinion, and the least-disruption phase (a good plan, not a proof, is enough there)."""
SCIP_MAX_FILLINGS = 1000
"""The configuration model is built only up to this many partition fillings: measured, 4,000
fillings took 2.4 s to build in Python and 4.5 s for SCIP's root node on an 8-GPU re-plan,
far past a 2 s budget (a deterministic size limit, so the same input always takes one path)."""
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


def _specs(inventory: Inventory) -> dict[int, GpuModelSpec]:
    return {g.index: get_spec(g.model) for g in inventory.gpus}


def _memory_targets(inventory: Inventory, policy: PlannerPolicy, specs) -> dict[int, MemoryPartitionMode]:
    pinned = {p.gpu: p.memory_mode for p in policy.gpus if p.memory_mode is not None}
    out = {}
    for g in inventory.gpus:
        want = pinned.get(g.index)
        out[g.index] = want if (want is not None and policy.allow_driver_reload) else g.memory_mode
    for hive in {g.hive_id for g in inventory.gpus}:  # NPS is hive-wide: one pinned value wins for all
        members = [g for g in inventory.gpus if g.hive_id == hive]
        wanted = {out[g.index] for g in members if out[g.index] != g.memory_mode}
        if len(wanted) == 1:
            for g in members:
                out[g.index] = next(iter(wanted))
    return out


def _candidates(inventory, policy, specs, memory) -> dict[int, list[ComputePartitionMode]]:
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    out = {}
    for g in inventory.gpus:
        spec = specs[g.index]
        if g.index in pinned:
            out[g.index] = [pinned[g.index]]
        else:
            modes = [c for c in spec.compute_modes() if spec.is_valid(c, memory[g.index])]
            out[g.index] = sorted(modes, key=lambda c: (c != g.compute_mode, spec.partitions(c)))
    return out


def _evaluate(inventory, demands, current, policy, specs, modes, rules, keepable_ids) -> tuple[Packing, int]:
    same_modes = {r.instance_id for r in current
                  if all(modes[ref.gpu] == inventory.gpu(ref.gpu).compute_mode for ref in r.partitions)}
    keep = {r.instance_id: r for r in current if r.instance_id in keepable_ids and r.instance_id in same_modes}
    restart = {r.instance_id: r for r in current if r.instance_id not in keepable_ids and r.instance_id in same_modes}
    best: tuple[Packing, int] | None = None
    for order in ("priority", "size"):  # priority-first greedy, and first-fit decreasing; keep the better
        packing = pack(build_slots(inventory, modes, specs, policy), items_for(demands), keep, policy, order, rules,
                       restart)
        disruption = sum(1 for r in current if r.instance_id not in packing.assignments
                         or tuple(packing.assignments[r.instance_id].refs) != tuple(r.partitions))
        disruption += sum(3 for g in inventory.gpus if modes[g.index] != g.compute_mode)
        if best is None or packing.objective(disruption) > best[0].objective(best[1]):
            best = (packing, disruption)
    return best


def _greedy(inventory, demands, current, policy, specs, memory, prob: Problem, rules: SpanRules,
            keep_ids: set[str] | None = None):
    """Pack at the current modes (valid ones; pinned modes win): what runs stays, nothing is
    repartitioned. Good enough whenever it places every replica, and a start for CP-SAT."""
    candidates = _candidates(inventory, policy, specs, memory)
    modes = {g.index: (g.compute_mode if g.compute_mode in candidates[g.index] else candidates[g.index][0])
             for g in inventory.gpus}
    keep_ids = set(keepable(prob, current)) if keep_ids is None else keep_ids
    best, _disruption = _evaluate(inventory, demands, current, policy, specs, modes, rules, keep_ids)
    return modes, best, sum(a.item.weight for a in best.assignments.values())


def plan(inventory: Inventory, demands: Sequence[ModelDemand], current: Sequence[RunningInstance],
         policy: PlannerPolicy) -> Plan:
    exact_after = True  # the full-set search (fullset.py) after the first pass
    kept_plan, moved = None, None
    specs = _specs(inventory)
    if (current and not policy.prefer_local_tp  # a re-plan: first what keeps every protected instance
            and _memory_targets(inventory, policy, specs) == {g.index: g.memory_mode for g in inventory.gpus}):
        kept_plan, kept_parts, kept_vars = _keep_search(inventory, demands, current, policy)
        if kept_plan.solver.gap == 0:
            return kept_plan
        exact_after = kept_vars <= LAYOUT_FIRST_EXACT_MAX_RANK_VARS
    if not policy.prefer_local_tp and not current:  # nothing runs: the layout search over the full set first
        modes, memory, packing, info, rules, rank_vars = _layout_first(inventory, demands, policy)
        exact_after = info.gap > 0 and rank_vars <= LAYOUT_FIRST_EXACT_MAX_RANK_VARS
    else:
        modes, memory, packing, info, rules = _first_pass(inventory, demands, current, policy,
                                                          _placed(kept_plan, demands) if kept_plan else -1, exact_after)
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
        "layout-search", float(placed), float(max(bound, placed)), _gap(placed, int(bound)), 0.0,
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
    specs = _specs(inventory)
    memory = {g.index: g.memory_mode for g in inventory.gpus}
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    # what may stay is judged over the feasible set the plans were made in: an instance the
    # full-set search placed at tp=2 across GPUs is not restarted because rule 2 would not place it so
    where = prob if policy.prefer_local_tp else build_problem(inventory, demands, policy, full=True)
    modes, packing, _placed = _greedy(inventory, demands, current, policy, specs, memory, prob, rules,
                                      set(keepable(where, current)))
    packing = fill_free_room(packing, policy, rules if policy.prefer_local_tp else None)
    modes, packing = _second_objective(inventory, current, policy, modes, memory, packing, rules, may_repartition=False)
    placed = placed_weight(packing)
    bound = max(int(best.bound), placed)
    info = SolverInfo("greedy", float(placed), float(bound), _gap(placed, bound), best.wall_time_s,
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
    specs = _specs(inventory)
    memory = {g.index: g.memory_mode for g in inventory.gpus}
    full = build_problem(inventory, demands, policy, full=True)
    guard = protected(current, demands)
    kept = {iid: run for iid, (_ci, run) in keepable(full, current).items() if iid in guard}
    held = {ref.gpu for run in kept.values() for ref in run.partitions}
    candidates = _candidates(inventory, policy, specs, memory)
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
    specs = _specs(inventory)
    memory = _memory_targets(inventory, policy, specs)
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    full = build_problem(inventory, demands, policy, full=True)
    bound, found, note, source = search_full_set(inventory, demands, policy, specs, full,
                                         _candidates(inventory, policy, specs, memory))
    modes, packing = _stay_in_current_modes(inventory, policy, specs, prob, rules, found.modes, memory, found.packing)
    info = _layout_info(placed_weight(packing), bound, found.evaluations, "", note, source)
    return modes, memory, packing, info, rules, rank_variables(full)


def _layout_info(placed: int, bound: int, evaluations: int, prefix: str, note: str, source: str) -> SolverInfo:
    name = f"full-set {source} bound"
    verdict = f"optimal: it reaches the {name}" if placed >= bound else f"{name} {bound}"
    return SolverInfo("layout-search", float(placed), float(max(bound, placed)), _gap(placed, bound), 0.0,
                      f"{prefix}layout search ({evaluations} layouts or choices packed){note}: {verdict}")


def _first_pass(inventory, demands, current, policy, kept_placed: int = -1, prove: bool = True):
    """The fast first pass under the placement rules (problem.py): greedy, then a proof on the
    problem dominance.py reduces (unless not ``prove``), then least disruption, skipped when the
    proven priority is no more than ``kept_placed`` (the re-plan's keeping search: its plan wins
    such a tie anyway)."""
    specs = _specs(inventory)
    memory = _memory_targets(inventory, policy, specs)
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    modes, best, greedy_placed = _greedy(inventory, demands, current, policy, specs, memory, prob, rules)
    everything = total_weight(demands)
    note = "greedy at the current modes"
    if greedy_placed >= everything:
        info = SolverInfo("greedy", float(greedy_placed), float(everything), 0.0,
                          status=f"optimal: every replica placed ({note})")
        return modes, memory, best, info, rules
    if not prove:  # a large node's re-plan: the keeping search's plan stands unless this greedy beats it
        info = SolverInfo("greedy", float(greedy_placed), float(everything), _gap(greedy_placed, everything),
                          status=f"{note}; exact models not built (a re-plan above {LAYOUT_FIRST_EXACT_MAX_RANK_VARS} "
                                 "full-set rank variables)")
        return modes, memory, best, info, rules
    restricted, allowed = restrict(prob)
    hint = to_restricted(prob, allowed, solution_from_packing(prob, inventory, modes, best))
    # a re-plan's keeping search has a plan: only a better one is worth finding (SCIP prunes the rest)
    first = _prove(restricted, hint, policy.time_budget_s, max(greedy_placed, kept_placed + 1),
                   second_opinion=kept_placed < 0)
    proven = first.status == "OPTIMAL"
    if first.solution is None or first.objective <= greedy_placed:
        bound = max(first.bound, greedy_placed) if first.solution is not None else everything
        verdict = f"{first.solver} proved it optimal" if proven else f"{first.solver} {first.status.lower()}, best bound {bound}"
        info = SolverInfo("greedy", float(greedy_placed), float(bound), _gap(greedy_placed, bound),
                          first.wall_time_s, f"{note}; {verdict}")
        return modes, memory, best, info, rules
    found = to_full(allowed, first.solution)
    near = {g.gpu: tuple(sorted({o for o in (g.current, coarsest(g), found.layout[g.gpu]) if o is not None}))
            for g in prob.gpus}  # least disruption searches the current, coarsest and found layouts
    solution, phase2 = found, "skipped: nothing runs, so no instance is disturbed"
    if current and first.objective <= kept_placed:
        phase2 = f"skipped: the plan that keeps what runs places {kept_placed}"
    elif current:
        second = solve_least_disruption(narrow(prob, near), first.objective, current, from_full(near, found),
                                        policy.time_budget_s * DISRUPTION_SHARE)
        if second.solution is not None:
            solution = to_full(near, second.solution)
        phase2 = second.status.lower()
    chosen = {g.gpu: g.layouts[solution.layout[g.gpu]] for g in prob.gpus}
    modes = {g: lay.compute for g, lay in chosen.items()}
    memory = {g: lay.memory for g, lay in chosen.items()}
    packing = to_packing(prob, solution, demands, current)
    if not current:
        modes, packing = _stay_in_current_modes(inventory, policy, specs, prob, rules, modes, memory, packing)
    info = SolverInfo(first.solver, float(first.objective), float(first.bound), _gap(first.objective, first.bound),
                      first.wall_time_s,
                      f"placed priority {first.status.lower()} (greedy at the current modes reached {greedy_placed}); "
                      f"least-disruption phase {phase2}")
    return modes, memory, packing, info, rules


def _stay_in_current_modes(inventory, policy, specs, prob: Problem, rules: SpanRules, modes, memory, packing: Packing):
    """With nothing running, the least-disruption phase is skipped; still, a GPU the proof
    moved to another compute mode goes back to its current one when everything placed on it
    fits there too (same placed priority, one repartition fewer)."""
    allowed = {g.gpu for g in prob.gpus if g.current is not None}
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        i = gpu.index
        if modes[i] == gpu.compute_mode or memory[i] != gpu.memory_mode or i not in allowed:
            continue
        mine = [a for a in packing.assignments.values() if any(r.gpu == i for r in a.refs)]
        if any(len({r.gpu for r in a.refs}) > 1 for a in mine):
            continue  # spanning ranks stay on the coarsest layout
        trial = {**modes, i: gpu.compute_mode}
        for order in ("size", "priority"):
            slots = {ref: s for ref, s in build_slots(inventory, trial, specs, policy).items() if ref.gpu == i}
            here = pack(slots, [a.item for a in mine], {}, policy, order, rules)
            if not here.unplaced:
                break
        else:
            continue
        moved = {a.item.instance_id for a in mine}
        assignments = {iid: a for iid, a in packing.assignments.items() if iid not in moved} | here.assignments
        slots = build_slots(inventory, trial, specs, policy)
        for a in sorted(assignments.values(), key=lambda a: a.item.instance_id):
            _occupy(slots, a)
        modes, packing = trial, Packing(assignments, packing.unplaced, packing.evicted_by, slots)
    return modes, packing


def _prove(prob: Problem, hint, time_budget_s: float, known: int, second_opinion: bool = True) -> SolveResult:
    """Phase 1: the placed-priority optimum with a proof. The surrogate knapsack's choice when
    it fits (proven at once); else the configuration model (SCIP), told to look only at plans
    placing at least ``known`` (reachable by the greedy, or one more than a re-plan's kept
    plan); else, or when SCIP leaves a gap, CP-SAT's counts model as a second opinion (unless
    ``second_opinion`` is False: a re-plan whose keeping search already has a plan, which the
    full-set search then starts from). (CP-SAT first was measured slower: its start-up costs
    more than SCIP's proof on most cases the surrogate leaves.)"""
    sur = surrogate(prob)
    quick = pack_surrogate(prob, sur, time_budget_s * SURROGATE_SHARE)
    if quick is not None:
        return quick
    alt = solve_by_configurations(prob, time_budget_s * SCIP_SHARE, known, max_fillings=SCIP_MAX_FILLINGS,
                                  at_most=sur.bound)
    if alt is not None and alt.status == "OPTIMAL" and alt.solution is not None:
        return alt
    if not second_opinion:
        return alt if alt is not None else SolveResult("UNKNOWN", 0, 0, 0.0, None, "scip-configurations")
    first = solve_placed_priority(prob, hint, time_budget_s * CPSAT_SHARE, at_most=sur.bound)
    if alt is None or alt.solution is None:
        return first
    bound = min(alt.bound, first.bound) if first.solution is not None else alt.bound
    best = alt if first.solution is None or alt.objective >= first.objective else first
    status = "OPTIMAL" if best.objective >= bound else "FEASIBLE"
    return SolveResult(status, best.objective, max(bound, best.objective), first.wall_time_s + alt.wall_time_s,
                       best.solution, best.solver)


def _gap(objective: int, bound: int) -> float:
    return 0.0 if bound <= 0 else max(0.0, (bound - objective) / bound)
