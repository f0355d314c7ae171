"""Rolling replacement of a changed model: one replica down at a time, never all at once.

Why: the planner stops every instance whose fingerprint changed and places the new ones in
one plan; applied as is, editing one option of a 4-replica model takes all four down for a
full vLLM start (minutes on hardware). This filter, applied to the plan each reconcile pass,
lets exactly one old replica of such a model go (its replacement starts in the same pass)
while every other replica of the model is READY; the rest of the plan is untouched. The
daemon runs the next pass as soon as the replacement is READY (``rolling_due``). Before any
stop the daemon drains the instance (the router stops sending to it, in-flight requests
finish; see ``Daemon.drain``).

Safety: the planner placed the new replicas assuming every old one gone. A replacement is
started only if, on every partition that receives a start this pass, the old replicas held
back use no more memory than the planner reserved there for their (held-back) replacements;
if no replica can be replaced that way, the whole model is replaced at once, as before, and
the event says why.

Instance ids stay ``<model>-<replica>``, so a replacement cannot run next to its old self:
no surge replica is started (see docs/deploy.md, "Rolling changes").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

from gpu_sharing.planner.types import Plan, RunningInstance


@dataclass(frozen=True)
class RollingStep:
    model: str
    replacing: str | None
    """The old replica stopped (and started anew) in this pass; None while waiting."""
    waiting_for: tuple[str, ...]
    """Instances of the model not READY yet (the step waits for them)."""
    held_back: tuple[str, ...]
    """Old replicas kept running this pass."""
    all_at_once: str = ""
    """Non-empty: why the model is replaced at once instead."""

    def message(self) -> str:
        if self.all_at_once:
            return f"replacing every replica at once: {self.all_at_once}"
        if self.replacing:
            return (f"replacing {self.replacing}; {len(self.held_back)} old replica(s) left: "
                    f"{', '.join(self.held_back) or 'none'}")
        return f"waiting for {', '.join(self.waiting_for)} to be READY; {len(self.held_back)} old replica(s) left"


def limit_rolling(plan: Plan, running: Sequence[RunningInstance], ready: Mapping[str, bool],
                  fingerprints: Mapping[str, str]) -> tuple[Plan, tuple[RollingStep, ...]]:
    """The plan with at most one old replica per changed multi-replica model replaced, and the steps taken.

    ``ready``: instance id -> READY now, for every supervised instance; ``fingerprints``: model -> desired."""
    stopping = set(plan.to_stop)
    by_model: dict[str, list[RunningInstance]] = {}
    for r in running:
        by_model.setdefault(r.model, []).append(r)
    starts = {p.instance_id: p for p in plan.to_start}
    repartitioned = {t.gpu for t in plan.to_repartition}
    keep_stop, drop_start, steps = set(stopping), set(), []
    for model, insts in sorted(by_model.items()):
        want = fingerprints.get(model)
        old = sorted((r for r in insts if want is not None and r.fingerprint != want and r.instance_id in stopping
                      and r.instance_id in starts), key=lambda r: r.instance_id)
        if len(insts) < 2 or len(old) < 1:
            continue  # one replica (nothing can stay up), or nothing of this model is being replaced
        if any(p.gpu in repartitioned for r in old for p in r.partitions):
            steps.append(RollingStep(model, None, (), (), all_at_once="its GPU is repartitioned"))
            continue
        not_ready = tuple(sorted(r.instance_id for r in insts if r.instance_id not in stopping
                                 and not ready.get(r.instance_id, False)))
        choice = None
        if not not_ready:
            choice = next((c for c in old if _fits(c, old, starts, plan.to_start)), None)
            if choice is None:
                steps.append(RollingStep(model, None, (), (), all_at_once="the new placements overlap old replicas"))
                continue
        held = tuple(r.instance_id for r in old if r is not choice)
        keep_stop -= set(held)
        drop_start |= set(held)
        steps.append(RollingStep(model, choice.instance_id if choice else None, not_ready, held))
    if not drop_start:
        return plan, tuple(steps)
    limited = dataclasses.replace(plan, to_stop=tuple(i for i in plan.to_stop if i in keep_stop),
                                  to_start=tuple(p for p in plan.to_start if p.instance_id not in drop_start))
    return limited, tuple(steps)


def _fits(cand: RunningInstance, old: Sequence[RunningInstance], starts: Mapping, to_start: Sequence) -> bool:
    held = [r for r in old if r is not cand]
    held_new = [starts[r.instance_id] for r in held]
    held_ids = {r.instance_id for r in held}
    touched = {ref for p in to_start if p.instance_id not in held_ids for ref in p.partitions}
    for ref in touched:
        extra = (sum(r.memory_bytes_per_rank for r in held if ref in r.partitions)
                 - sum(p.memory_bytes_per_rank for p in held_new if ref in p.partitions))
        if extra > 0:
            return False
    return True
