"""One custom Prometheus collector that reads the daemon's snapshot at scrape time.

Names are under ``gpu_sharing_`` with units in the name; counters end in ``_total``.
Histograms are rebuilt from the daemon's bounded sample lists (cheap at 64 instances).
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gpu_sharing.metrics.snapshot import INSTANCE_STATES, DaemonCounters, NodeSnapshot

RECONCILE_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTER_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _histogram(name: str, doc: str, samples: list[float], buckets: tuple[float, ...]) -> HistogramMetricFamily:
    counts = []
    ordered = sorted(samples)
    i = 0
    for b in buckets:
        while i < len(ordered) and ordered[i] <= b:
            i += 1
        counts.append((str(b), i))
    counts.append(("+Inf", len(ordered)))
    h = HistogramMetricFamily(name, doc)
    h.add_metric([], counts, sum_value=sum(ordered))
    return h


class DaemonCollector(Collector):
    def __init__(self, snapshot: Callable[[], NodeSnapshot], counters: DaemonCounters):
        self._snapshot = snapshot
        self._counters = counters

    def collect(self) -> Iterable:
        snap, c = self._snapshot(), self._counters
        info = GaugeMetricFamily("gpu_sharing_gpu_info", "GPU model and partition modes (value 1).",
                                 labels=["gpu", "model", "compute_partition", "memory_partition"])
        total = GaugeMetricFamily("gpu_sharing_partition_vram_total_bytes", "VRAM of each logical partition.",
                                  labels=["gpu", "partition"])
        used = GaugeMetricFamily("gpu_sharing_partition_vram_used_bytes", "VRAM in use on each logical partition.",
                                 labels=["gpu", "partition"])
        for g in snap.gpus:
            info.add_metric([str(g.gpu), g.model, g.compute_partition, g.memory_partition], 1)
            for p in g.partitions:
                total.add_metric([str(g.gpu), f"{g.gpu}.{p.index}"], p.vram_total_bytes)
                used.add_metric([str(g.gpu), f"{g.gpu}.{p.index}"], p.vram_used_bytes)
        yield from (info, total, used)
        state = GaugeMetricFamily("gpu_sharing_instance_state", "1 for the instance's current state.",
                                  labels=["instance", "model", "state"])
        restarts = CounterMetricFamily("gpu_sharing_instance_restarts", "Restarts of each instance.",
                                       labels=["instance", "model"])
        budget = GaugeMetricFamily("gpu_sharing_instance_vram_budget_bytes", "VRAM budget per rank.",
                                   labels=["instance", "model"])
        vram = GaugeMetricFamily("gpu_sharing_instance_vram_used_bytes", "VRAM used by the instance's process.",
                                 labels=["instance", "model"])
        for i in snap.instances:
            for s in INSTANCE_STATES:
                state.add_metric([i.instance_id, i.model, s], 1 if i.state == s else 0)
            restarts.add_metric([i.instance_id, i.model], i.restarts)
            budget.add_metric([i.instance_id, i.model], i.memory_budget_bytes)
            vram.add_metric([i.instance_id, i.model], i.vram_used_bytes)
        yield from (state, restarts, budget, vram)
        yield _histogram("gpu_sharing_reconcile_duration_seconds", "Duration of reconcile passes.",
                         c.reconcile_durations_s, RECONCILE_BUCKETS_S)
        reload = CounterMetricFamily("gpu_sharing_config_reload", "Config reloads by result.", labels=["result"])
        for result, n in sorted(c.reload_total.items()):
            reload.add_metric([result], n)
        yield reload
        yield GaugeMetricFamily("gpu_sharing_unplaceable_replicas", "Replicas the planner could not place.",
                                value=len(snap.unplaceable))
        req = CounterMetricFamily("gpu_sharing_router_requests", "Router requests by model and HTTP code.",
                                  labels=["model", "code"])
        for (model, code), n in sorted(c.router_requests.items()):
            req.add_metric([model, code], n)
        yield req
        yield _histogram("gpu_sharing_router_request_duration_seconds", "Router request duration (to last byte).",
                         c.router_durations_s, ROUTER_BUCKETS_S)
        viol = CounterMetricFamily("gpu_sharing_vram_violations", "Instances over their VRAM budget, by action.",
                                   labels=["instance", "action"])
        for (inst, action), n in sorted(c.vram_violations.items()):
            viol.add_metric([inst, action], n)
        yield viol
        yield GaugeMetricFamily("gpu_sharing_foreign_processes", "GPU processes on managed partitions that are not ours.",
                                value=c.foreign_processes)
