"""The router's view of demand: in-flight counts, requests held for a cold start, and the hold queue itself.

Why in the daemon layer: holding a request is an asyncio wait on the event loop (the router's),
and the figures it keeps (in flight, held, last request) are what the autoscaler decides from.
A request for a model with ``scaling`` and no READY replica is held here, bounded by the
model's ``queue_limit`` and ``queue_timeout_s``; the daemon wakes the waiters whenever a new
status snapshot is published (``notify``, on the loop thread).

Metrics are client_python's own types, registered in the daemon's registry, labelled only by
configured model names (so the series count stays bounded).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from gpu_sharing.config.schema import Config, ScalingSettings
from gpu_sharing.reconcile.autoscale import DemandSample

WAIT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class HoldRefused(Exception):
    """The request cannot be held (queue full) or waited past its timeout; ``retry_after_s`` for the 503."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Model:
    settings: ScalingSettings
    in_flight: int = 0
    held: int = 0
    last_request_at: float | None = None
    last_cold_start_s: float | None = None


class DemandTracker:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, registry: CollectorRegistry | None = None,
                 on_hold: Callable[[str], None] = lambda model: None, default_retry_after_s: int = 5):
        self.clock = clock
        self.on_hold = on_hold
        self.default_retry_after_s = default_retry_after_s
        self._models: dict[str, _Model] = {}
        self._served: dict[str, str] = {}
        self._changed = asyncio.Event()
        self.cold_starts = Counter("gpu_sharing_cold_starts", "Requests that found no READY replica and were held.",
                                   ["model"], registry=registry)
        self.queue_wait = Histogram("gpu_sharing_router_queue_wait_seconds",
                                    "How long held requests waited for a READY replica.", ["model"],
                                    buckets=WAIT_BUCKETS_S, registry=registry)
        self.scale_events = Counter("gpu_sharing_scale_events", "Autoscaler decisions by kind.", ["model", "kind"],
                                    registry=registry)

    # ---- configuration ------------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Track every model with ``scaling`` under each of its served names; keep counts of kept models."""
        models: dict[str, _Model] = {}
        served: dict[str, str] = {}
        for m in config.models:
            if m.scaling is None or not m.enabled:
                continue
            old = self._models.get(m.name)
            models[m.name] = old if old is not None else _Model(m.scaling)
            models[m.name].settings = m.scaling
            for name in (m.name, *m.aliases):
                served[name] = m.name
        self._models, self._served = models, served

    def model_for(self, served_name: str) -> str | None:
        """The scaled model serving this name, or None (not demand-driven)."""
        return self._served.get(served_name)

    def served_names(self) -> list[str]:
        return sorted(self._served)

    # ---- accounting -----------------------------------------------------------------------------
    def begin(self, served_name: str) -> None:
        m = self._models.get(self._served.get(served_name, ""))
        if m is not None:
            m.in_flight += 1
            m.last_request_at = self.clock()

    def end(self, served_name: str) -> None:
        m = self._models.get(self._served.get(served_name, ""))
        if m is not None:
            m.in_flight = max(0, m.in_flight - 1)
            m.last_request_at = self.clock()

    def samples(self) -> dict[str, DemandSample]:
        return {name: DemandSample(name, m.in_flight, m.held, m.last_request_at) for name, m in self._models.items()}

    def any_held(self) -> bool:
        return any(m.held for m in self._models.values())

    def retry_after_s(self, model: str) -> int:
        """Based on the last observed cold start of this model (else the API default)."""
        m = self._models.get(model)
        if m is None or m.last_cold_start_s is None:
            return self.default_retry_after_s
        return max(1, math.ceil(m.last_cold_start_s))

    # ---- holding ---------------------------------------------------------------------------------
    def notify(self) -> None:
        """A new snapshot was published: wake every held request to look again. Call on the loop thread."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def hold(self, served_name: str, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` (a READY replica exists) or raise HoldRefused (queue full, timeout)."""
        model = self._served[served_name]
        m = self._models[model]
        if m.held >= m.settings.queue_limit:
            raise HoldRefused(f"the model `{served_name}` is starting and its queue is full "
                              f"({m.settings.queue_limit} requests held)", self.retry_after_s(model))
        started = self.clock()
        m.held += 1
        m.last_request_at = started
        self.cold_starts.labels(model).inc()
        try:
            self.on_hold(model)
            deadline = started + m.settings.queue_timeout_s
            while not ready():
                left = deadline - self.clock()
                if left <= 0:
                    raise HoldRefused(f"the model `{served_name}` did not become ready within "
                                      f"{m.settings.queue_timeout_s:g} s", self.retry_after_s(model))
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=left)
                except asyncio.TimeoutError:
                    continue
            m.last_cold_start_s = self.clock() - started
        finally:
            self.queue_wait.labels(model).observe(self.clock() - started)
            m.held -= 1
            m.last_request_at = self.clock()
