"""The daemon's counters and histograms: client_python's own types, updated when things happen.

Why not rebuild them at scrape time from sample windows: a window forgets, so ``_count``
stalls and buckets fall, and a Prometheus ``rate()`` over a counter that goes backwards
is garbage. These instruments only ever go up. Labels are bounded by the caller: model
and instance labels carry configured names only (the router maps anything else to
``UNKNOWN_LABEL``), codes are HTTP status codes, kinds and results are enums.

Snapshot-derived gauges (GPUs, partitions, instance states) stay in ``collector.py``.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

RECONCILE_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTER_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNKNOWN_LABEL = "__unknown__"
"""The model label of requests naming a model that is not configured (bounded series)."""


class DaemonMetrics:
    """All event-driven instruments of one daemon, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry, *, process_collector: bool = True):
        self.registry = registry
        self.reconcile_duration = Histogram(
            "gpu_sharing_reconcile_duration_seconds", "Duration of reconcile passes.",
            buckets=RECONCILE_BUCKETS_S, registry=registry)
        self.config_reload = Counter("gpu_sharing_config_reload", "Config reloads by result.", ["result"],
                                     registry=registry)
        for result in ("ok", "error"):
            self.config_reload.labels(result=result)
        self.router_requests = Counter("gpu_sharing_router_requests",
                                       "Router requests by model (configured names only) and HTTP code.",
                                       ["model", "code"], registry=registry)
        self.router_duration = Histogram(
            "gpu_sharing_router_request_duration_seconds",
            "Router request duration (to last byte); its _count equals the sum of gpu_sharing_router_requests_total.",
            buckets=ROUTER_BUCKETS_S, registry=registry)
        self.instance_restarts = Counter("gpu_sharing_instance_restarts",
                                         "Restarts of each instance after a crash, failed health or start timeout.",
                                         ["instance", "model"], registry=registry)
        self.instance_crashes = Counter("gpu_sharing_instance_crashes",
                                        "Unexpected exits or kills of a model's instances.", ["model"],
                                        registry=registry)
        self.events = Counter("gpu_sharing_events", "Events by kind (see /status events).", ["kind"],
                              registry=registry)
        self.vram_violations = Counter("gpu_sharing_vram_violations", "Instances over their VRAM budget, by action.",
                                       ["instance", "action"], registry=registry)
        self.foreign_processes = Gauge("gpu_sharing_foreign_processes",
                                       "GPU processes on managed partitions that are not ours.", registry=registry)
        if process_collector:  # process_cpu_seconds_total, process_resident_memory_bytes, open fds (Linux /proc)
            ProcessCollector(registry=registry)

    def declare_event_kinds(self, kinds: Iterable[str]) -> None:
        """Every kind exported from the start at 0, so a rule sees the first increase."""
        for k in kinds:
            self.events.labels(kind=k)

    def observe_request(self, model_label: str, code: int, duration_s: float) -> None:
        """One finished router request: the counter and the histogram move together."""
        self.router_requests.labels(model=model_label, code=str(code)).inc()
        self.router_duration.observe(duration_s)
