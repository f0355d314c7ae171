"""The fast first pass under the placement rules, and what the pipeline asks of the current modes (pure).

Why its own module: plan() (planner.py) is the pipeline; this is one of its steps, with its own
time-budget shares. Under rules 1-3 (problem.py): the greedy at the current modes (packing.py:
keep what runs, best fit, priority eviction; priority-first and first-fit-decreasing orders),
then a proof on the problem dominance.py reduces (the surrogate knapsack's choice, else SCIP's
configuration model, else CP-SAT), then least disruption when instances run. Also the GPUs'
memory targets and candidate compute modes, which every step of plan() starts from.
"""

from __future__ import annotations

from gpu_sharing.hardware.catalog import GpuModelSpec, get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.planner.decode import solution_from_packing, to_packing
from gpu_sharing.planner.dominance import from_full, restrict, to_full, to_restricted
from gpu_sharing.planner.exact import keepable, solve_least_disruption, solve_placed_priority
from gpu_sharing.planner.mip import solve_by_configurations
from gpu_sharing.planner.packing import Packing, SpanRules, _occupy, build_slots, items_for, pack, span_rules
from gpu_sharing.planner.problem import Problem, build_problem, coarsest, narrow, total_weight
from gpu_sharing.planner.solution import SolveResult, gap
from gpu_sharing.planner.surrogate import pack_surrogate, surrogate
from gpu_sharing.planner.types import PlannerPolicy, SolverInfo

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


def gpu_specs(inventory: Inventory) -> dict[int, GpuModelSpec]:
    return {g.index: get_spec(g.model) for g in inventory.gpus}


def memory_targets(inventory: Inventory, policy: PlannerPolicy, specs) -> dict[int, MemoryPartitionMode]:
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


def candidate_modes(inventory, policy, specs, memory) -> dict[int, list[ComputePartitionMode]]:
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


def greedy_at(inventory, demands, current, policy, specs, memory, prob: Problem, rules: SpanRules,
            keep_ids: set[str] | None = None):
    """Pack at the current modes (valid ones; pinned modes win): what runs stays, nothing is
    repartitioned. Good enough whenever it places every replica, and a start for CP-SAT."""
    candidates = candidate_modes(inventory, policy, specs, memory)
    modes = {g.index: (g.compute_mode if g.compute_mode in candidates[g.index] else candidates[g.index][0])
             for g in inventory.gpus}
    keep_ids = set(keepable(prob, current)) if keep_ids is None else keep_ids
    best, _disruption = _evaluate(inventory, demands, current, policy, specs, modes, rules, keep_ids)
    return modes, best, sum(a.item.weight for a in best.assignments.values())


def run_first_pass(inventory, demands, current, policy, kept_placed: int = -1, prove: bool = True,
                size_rule: int = 0):
    """The fast first pass under the placement rules (problem.py): greedy, then a proof on the
    problem dominance.py reduces (unless not ``prove``), then least disruption, skipped when the
    proven priority is no more than ``kept_placed`` (the re-plan's keeping search: its plan wins
    such a tie anyway). ``size_rule``: the rank variables above which plan() does not prove (its
    status names it)."""
    specs = gpu_specs(inventory)
    memory = memory_targets(inventory, policy, specs)
    prob = build_problem(inventory, demands, policy)
    rules = span_rules(prob)
    modes, best, greedy_placed = greedy_at(inventory, demands, current, policy, specs, memory, prob, rules)
    everything = total_weight(demands)
    note = "greedy at the current modes"
    if greedy_placed >= everything:
        info = SolverInfo("greedy", float(greedy_placed), float(everything), 0.0,
                          status=f"optimal: every replica placed ({note})")
        return modes, memory, best, info, rules
    if not prove:  # a large node's re-plan: the keeping search's plan stands unless this greedy beats it
        info = SolverInfo("greedy", float(greedy_placed), float(everything), gap(greedy_placed, everything),
                          status=f"{note}; exact models not built (a re-plan above {size_rule} "
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
        info = SolverInfo("greedy", float(greedy_placed), float(bound), gap(greedy_placed, bound),
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
        modes, packing = stay_in_current_modes(inventory, policy, specs, prob, rules, modes, memory, packing)
    info = SolverInfo(first.solver, float(first.objective), float(first.bound), gap(first.objective, first.bound),
                      first.wall_time_s,
                      f"placed priority {first.status.lower()} (greedy at the current modes reached {greedy_placed}); "
                      f"least-disruption phase {phase2}")
    return modes, memory, packing, info, rules


def stay_in_current_modes(inventory, policy, specs, prob: Problem, rules: SpanRules, modes, memory, packing: Packing):
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


