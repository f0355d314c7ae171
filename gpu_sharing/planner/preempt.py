"""The preemption policy: when a plan may stop or move what runs (pure).

Placed priority comes first, but not at any price: a plan that places more only by
repacking running instances for newcomers of equal or lower priority trades real downtime
for nothing the operator asked for (issue 19: 2 of 40 re-plans stopped or moved instances of
unchanged models, sometimes to gain only a priority-0 newcomer). With
``planner.preempt: strictly_higher_priority`` (the default) a plan that stops or moves running
instances of unchanged models (its node-wide drain included, assemble.py) is taken only when it
places more priority among replicas of strictly higher priority than the highest-priority
instance it stops, compared with the plan that keeps every one of them where it is. ``never``
always keeps them; ``any_gain`` takes any plan with more placed priority.
"""

from __future__ import annotations

from typing import Sequence

from gpu_sharing.planner.types import ModelDemand, Plan, PlannerPolicy, PreemptPolicy, RunningInstance


def protected(current: Sequence[RunningInstance], demands: Sequence[ModelDemand]) -> dict[str, int]:
    """Running instances of unchanged models whose replica is still wanted -> their priority."""
    by_name = {d.name: d for d in demands}
    return {r.instance_id: by_name[r.model].priority for r in current
            if r.model in by_name and by_name[r.model].fingerprint == r.fingerprint
            and r.replica < by_name[r.model].replicas}


def disturbed(plan: Plan, guard: dict[str, int]) -> tuple[str, ...]:
    """Protected instances ``plan`` stops or moves (a drain's included)."""
    return tuple(iid for iid in plan.to_stop if iid in guard)


def _above(plan: Plan, priority: dict[str, int], floor: int) -> int:
    return sum(priority[x.model] + 1 for x in plan.placements if priority[x.model] > floor)


def justified(candidate: Plan, keeping: Plan, hit: Sequence[str], guard: dict[str, int],
              demands: Sequence[ModelDemand], policy: PlannerPolicy) -> bool:
    """Whether ``candidate`` (which stops ``hit``) may be taken over ``keeping`` (which keeps them)."""
    if policy.preempt == PreemptPolicy.ANY_GAIN:
        return True
    if policy.preempt == PreemptPolicy.NEVER:
        return False
    priority = {d.name: d.priority for d in demands}
    floor = max(guard[iid] for iid in hit)
    return _above(candidate, priority, floor) > _above(keeping, priority, floor)


SHOWN = 8
"""Instances a warning names at most (a plan found by moving whole GPUs may stop dozens)."""


def explain(candidate: Plan, hit: Sequence[str], policy: PlannerPolicy) -> str:
    drain = " (node-wide drain)" if candidate.drain_required else ""
    named = ", ".join(hit[:SHOWN]) + (f" and {len(hit) - SHOWN} more" if len(hit) > SHOWN else "")
    return (f"kept running instances: the plan placing {int(candidate.solver.objective)} would stop or move "
            f"{named}{drain} for a gain of equal or lower priority (planner.preempt: {policy.preempt.value})")
