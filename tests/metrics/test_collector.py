"""DaemonCollector values read back from a fresh CollectorRegistry (get_sample_value).

Also `promtool check metrics` (Prometheus' own linter) on the exposition, skipped when
promtool is missing (Debian: apt-get install prometheus); the daemon-level check on a
real scrape is in tests/daemon/test_daemon_integration.py.

The collector turns a snapshot plus counters into metric families at scrape time; these
tests change the inputs and check that the exported samples follow.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gpu_sharing.metrics.collector import DaemonCollector
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import INSTANCE_STATES, GpuSnapshot, InstanceSnapshot, NodeSnapshot, PartitionSnapshot

GIB = 1 << 30


def make(snap: NodeSnapshot) -> tuple[CollectorRegistry, DaemonMetrics]:
    reg = CollectorRegistry()
    reg.register(DaemonCollector(lambda: snap))
    return reg, DaemonMetrics(reg)


def sample_snapshot() -> NodeSnapshot:
    parts = (PartitionSnapshot(0, 0, 0, 38, 48 * GIB, 10 * GIB), PartitionSnapshot(0, 1, 1, 38, 48 * GIB, 0))
    gpus = (GpuSnapshot(0, "MI300X", "CPX", "NPS4", parts),)
    inst = (InstanceSnapshot("qwen-0", "qwen", 0, ("qwen",), "READY", 100, 8100, "http://127.0.0.1:8100", ("0.0",), 2, "",
                             9 * GIB, 8 * GIB),
            InstanceSnapshot("llama-0", "llama", 0, ("llama",), "BACKOFF", None, 8101, "http://127.0.0.1:8101", ("0.1",),
                             5, "oom", 40 * GIB))
    return NodeSnapshot(gpus, inst, ({"model": "big", "replica": 0, "reason": "no room"},), 3)


def test_gpu_and_partition_values():
    reg, _ = make(sample_snapshot())
    assert reg.get_sample_value("gpu_sharing_gpu_info", {"gpu": "0", "model": "MI300X", "compute_partition": "CPX",
                                                         "memory_partition": "NPS4"}) == 1
    assert reg.get_sample_value("gpu_sharing_partition_vram_total_bytes", {"gpu": "0", "partition": "0.1"}) == 48 * GIB
    assert reg.get_sample_value("gpu_sharing_partition_vram_used_bytes", {"gpu": "0", "partition": "0.0"}) == 10 * GIB
    assert reg.get_sample_value("gpu_sharing_unplaceable_replicas") == 1


def test_instance_state_one_hot_restarts_and_vram():
    reg, metrics = make(sample_snapshot())
    metrics.instance_restarts.labels(instance="qwen-0", model="qwen").inc(2)
    states = {s: reg.get_sample_value("gpu_sharing_instance_state", {"instance": "llama-0", "model": "llama", "state": s})
              for s in INSTANCE_STATES}
    assert states["BACKOFF"] == 1 and sum(states.values()) == 1
    assert reg.get_sample_value("gpu_sharing_instance_restarts_total", {"instance": "qwen-0", "model": "qwen"}) == 2
    assert reg.get_sample_value("gpu_sharing_instance_vram_budget_bytes", {"instance": "llama-0", "model": "llama"}) == 40 * GIB
    assert reg.get_sample_value("gpu_sharing_instance_vram_used_bytes", {"instance": "qwen-0", "model": "qwen"}) == 8 * GIB


def test_counters_follow_the_daemon():
    reg, metrics = make(NodeSnapshot())
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "error"}) == 0
    metrics.config_reload.labels(result="error").inc(2)
    metrics.config_reload.labels(result="ok").inc()
    for _ in range(5):
        metrics.observe_request("qwen", 200, 0.01)
    metrics.observe_request("__unknown__", 404, 0.0001)
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "error"}) == 2
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "ok"}) == 1
    assert reg.get_sample_value("gpu_sharing_router_requests_total", {"model": "qwen", "code": "200"}) == 5
    assert reg.get_sample_value("gpu_sharing_router_requests_total", {"model": "__unknown__", "code": "404"}) == 1
    assert reg.get_sample_value("gpu_sharing_router_request_duration_seconds_count") == 6


def test_histograms_are_cumulative():
    reg, metrics = make(NodeSnapshot())
    for d in (0.003, 0.015, 0.015, 3.0):
        metrics.reconcile_duration.observe(d)
    name = "gpu_sharing_reconcile_duration_seconds"
    assert reg.get_sample_value(name + "_bucket", {"le": "0.005"}) == 1
    assert reg.get_sample_value(name + "_bucket", {"le": "0.02"}) == 3
    assert reg.get_sample_value(name + "_bucket", {"le": "+Inf"}) == 4
    assert reg.get_sample_value(name + "_count") == 4
    assert abs(reg.get_sample_value(name + "_sum") - 3.033) < 1e-9


def test_exposition_names_have_prefix():
    reg, _ = make(sample_snapshot())
    text = generate_latest(reg).decode()
    names = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")}
    assert names and all(n.startswith(("gpu_sharing_", "process_")) for n in names)
    assert "process_cpu_seconds_total" in names  # the daemon's own process collector


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_collector_output_passes_promtool():
    reg, metrics = make(sample_snapshot())
    metrics.reconcile_duration.observe(0.01)
    metrics.observe_request("qwen", 200, 0.002)
    metrics.vram_violations.labels(instance="qwen-0", action="restart").inc()
    metrics.config_reload.labels(result="error").inc()
    metrics.declare_event_kinds(["crash"])
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=generate_latest(reg),
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout + r.stderr).decode()
