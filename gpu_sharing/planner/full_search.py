"""The full-set search of a plan from nothing or around kept instances (planner.py steps 0 and
0b): the layout search, then the pattern step, then ruin and recreate.

Why its own module: the three steps share one bound and one status note, and planner.py
(the pipeline) stays within the size rule. Pure: no clock, counted work only."""

from __future__ import annotations

from dataclasses import replace

from gpu_sharing.planner.fill import placed_weight
from gpu_sharing.planner.improve import improve as ruin_and_recreate, mode_slots, moves_for
from gpu_sharing.planner.layout_search import search_layouts
from gpu_sharing.planner.pattern_master import every_layout, improve
from gpu_sharing.planner.problem import Problem, total_weight
from gpu_sharing.planner.surrogate import surrogate
from gpu_sharing.planner.types import PlannerPolicy


def search_full_set(inventory, demands, policy: PlannerPolicy, specs, full: Problem, candidates, kept=None):
    """The full-set knapsack's bound, its choice packed at a few layouts (layout_search.py);
    when that leaves a gap and nothing is kept, the pattern step (pattern_master.py) over the
    same candidate modes: a better plan if it finds one, and its LP bound when the candidates
    are every layout (pinned modes or no NPS choice); then, when a gap is still left, ruin and
    recreate (improve.py) polishes the plan, kept instances and their GPUs untouched.
    Returns (bound, found, note, what the bound is: "knapsack" or "pattern LP")."""
    sur = surrogate(full)
    bound = min(sur.bound, total_weight(demands))
    chosen = {full.demands[di].name: k for di, k in sur.chosen.items()}
    found = search_layouts(inventory, demands, policy, specs, candidates, chosen, bound, kept=kept)
    note, source = "", "knapsack"
    if found.placed < bound and not kept:
        better = improve(inventory, demands, policy, specs, candidates, found.modes, found.packing, bound,
                         found.near)
        if better.rounds:
            note = f"; pattern LP ({better.rounds} rounds, {better.columns} columns)"
        if better.packing is not None:
            note += f" placed {placed_weight(better.packing)} (layout search {found.placed})"
            found = replace(found, modes=better.modes, packing=better.packing, placed=placed_weight(better.packing))
        if better.bound is not None and every_layout(full, candidates) and int(better.bound + 1e-6) < bound:
            bound = max(found.placed, int(better.bound + 1e-6))
            note += f", LP bound {bound}"
            source = "pattern LP"
    moves = moves_for(policy.time_budget_s)
    if found.placed < bound and moves:
        polished = ruin_and_recreate(found.packing, bound, found.modes,
                                     mode_slots(inventory, specs, policy, found.modes, candidates),
                                     frozenset(kept or ()), moves)
        if polished.gained > 0:
            found = replace(found, modes=polished.modes, packing=polished.packing, placed=polished.placed)
        note += f"; ruin and recreate: +{polished.gained} in {polished.moves} moves"
    return bound, found, note, source
