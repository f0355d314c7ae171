"""One custom Prometheus collector: gauges read from the daemon's snapshot at scrape time.

Names are under ``gpu_sharing_`` with units in the name. Only gauges live here (GPU
modes, partition VRAM, instance states and budgets): they describe the present.
Counters and histograms are client_python instruments updated when events happen
(``instruments.py``), so they never go backwards.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpu_sharing.metrics.snapshot import INSTANCE_STATES, NodeSnapshot


class DaemonCollector(Collector):
    def __init__(self, snapshot: Callable[[], NodeSnapshot]):
        self._snapshot = snapshot

    def collect(self) -> Iterable:
        snap = self._snapshot()
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
        budget = GaugeMetricFamily("gpu_sharing_instance_vram_budget_bytes", "VRAM budget per rank.",
                                   labels=["instance", "model"])
        vram = GaugeMetricFamily("gpu_sharing_instance_vram_used_bytes", "VRAM used by the instance's process.",
                                 labels=["instance", "model"])
        for i in snap.instances:
            for s in INSTANCE_STATES:
                state.add_metric([i.instance_id, i.model, s], 1 if i.state == s else 0)
            budget.add_metric([i.instance_id, i.model], i.memory_budget_bytes)
            vram.add_metric([i.instance_id, i.model], i.vram_used_bytes)
        yield from (state, budget, vram)
        yield GaugeMetricFamily("gpu_sharing_unplaceable_replicas", "Replicas the planner could not place.",
                                value=len(snap.unplaceable))
