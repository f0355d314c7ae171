"""The autoscale job: router demand -> Autoscaler decisions -> Reconciler replica targets, each an event.

Why a job of its own: cold starts must not wait for the periodic reconcile (30 s by default);
a held request triggers a step at once (``DemandTracker.on_hold``), and the step asks for a
reconcile pass only when a target changed.
"""

from __future__ import annotations

from typing import Callable

from gpu_sharing.daemon.demand import DemandTracker
from gpu_sharing.reconcile.autoscale import Autoscaler, ScaleDecision
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.events import EventKind

EventFn = Callable[..., None]
"""Daemon.event(kind, message, **fields)."""


class DemandScaler:
    def __init__(self, tracker: DemandTracker, *, clock: Callable[[], float]):
        self.tracker = tracker
        self.clock = clock
        self.autoscaler = Autoscaler()
        self.decisions: list[ScaleDecision] = []
        """Every decision so far (most recent last; bounded) for /status and tests."""

    def step(self, reconciler: Reconciler, event: EventFn) -> bool:
        """One decision round; True when a target changed (the caller then reconciles)."""
        config = reconciler.config
        self.tracker.configure(config)
        scaled = {m.name for m in config.models if m.scaling is not None}
        report = reconciler.last_report
        unplaced = sorted({u.model for u in (report.unplaceable if report else ()) if u.model in scaled})
        before = self.autoscaler.targets()
        decisions = self.autoscaler.decide(config, self.tracker.samples(), self.clock(), unplaced)
        for d in decisions:
            event(EventKind(f"scale-{d.kind.value}"), f"{d.from_replicas} -> {d.to_replicas} replica(s): {d.reason}",
                  model=d.model)
            self.tracker.scale_events.labels(d.model, d.kind.value).inc()
        self.decisions = (self.decisions + decisions)[-200:]
        targets = self.autoscaler.targets()
        reconciler.set_replica_targets(targets)
        return targets != before
