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
from gpu_sharing.metrics.snapshot import (INSTANCE_STATES, DaemonCounters, GpuSnapshot, InstanceSnapshot,
                                          NodeSnapshot, PartitionSnapshot)

GIB = 1 << 30


def make(snap: NodeSnapshot, counters: DaemonCounters) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(DaemonCollector(lambda: snap, counters))
    return reg


def sample_snapshot() -> NodeSnapshot:
    parts = (PartitionSnapshot(0, 0, 0, 38, 48 * GIB, 10 * GIB), PartitionSnapshot(0, 1, 1, 38, 48 * GIB, 0))
    gpus = (GpuSnapshot(0, "MI300X", "CPX", "NPS4", parts),)
    inst = (InstanceSnapshot("qwen-0", "qwen", 0, ("qwen",), "READY", 100, 8100, "http://127.0.0.1:8100", ("0.0",), 2, "",
                             9 * GIB, 8 * GIB),
            InstanceSnapshot("llama-0", "llama", 0, ("llama",), "BACKOFF", None, 8101, "http://127.0.0.1:8101", ("0.1",),
                             5, "oom", 40 * GIB))
    return NodeSnapshot(gpus, inst, ({"model": "big", "replica": 0, "reason": "no room"},), 3)


def test_gpu_and_partition_values():
    reg = make(sample_snapshot(), DaemonCounters())
    assert reg.get_sample_value("gpu_sharing_gpu_info", {"gpu": "0", "model": "MI300X", "compute_partition": "CPX",
                                                         "memory_partition": "NPS4"}) == 1
    assert reg.get_sample_value("gpu_sharing_partition_vram_total_bytes", {"gpu": "0", "partition": "0.1"}) == 48 * GIB
    assert reg.get_sample_value("gpu_sharing_partition_vram_used_bytes", {"gpu": "0", "partition": "0.0"}) == 10 * GIB
    assert reg.get_sample_value("gpu_sharing_unplaceable_replicas") == 1


def test_instance_state_one_hot_restarts_and_vram():
    reg = make(sample_snapshot(), DaemonCounters())
    states = {s: reg.get_sample_value("gpu_sharing_instance_state", {"instance": "llama-0", "model": "llama", "state": s})
              for s in INSTANCE_STATES}
    assert states["BACKOFF"] == 1 and sum(states.values()) == 1
    assert reg.get_sample_value("gpu_sharing_instance_restarts_total", {"instance": "qwen-0", "model": "qwen"}) == 2
    assert reg.get_sample_value("gpu_sharing_instance_vram_budget_bytes", {"instance": "llama-0", "model": "llama"}) == 40 * GIB
    assert reg.get_sample_value("gpu_sharing_instance_vram_used_bytes", {"instance": "qwen-0", "model": "qwen"}) == 8 * GIB


def test_counters_follow_the_daemon():
    counters = DaemonCounters()
    reg = make(NodeSnapshot(), counters)
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "error"}) == 0
    counters.reload_total["error"] += 2
    counters.reload_total["ok"] += 1
    counters.router_requests[("qwen", "200")] = 5
    counters.router_requests[("nope", "404")] = 1
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "error"}) == 2
    assert reg.get_sample_value("gpu_sharing_config_reload_total", {"result": "ok"}) == 1
    assert reg.get_sample_value("gpu_sharing_router_requests_total", {"model": "qwen", "code": "200"}) == 5
    assert reg.get_sample_value("gpu_sharing_router_requests_total", {"model": "nope", "code": "404"}) == 1


def test_histograms_are_cumulative():
    counters = DaemonCounters(reconcile_durations_s=[0.003, 0.015, 0.015, 3.0], router_durations_s=[0.0005, 0.2])
    reg = make(NodeSnapshot(), counters)
    name = "gpu_sharing_reconcile_duration_seconds"
    assert reg.get_sample_value(name + "_bucket", {"le": "0.005"}) == 1
    assert reg.get_sample_value(name + "_bucket", {"le": "0.02"}) == 3
    assert reg.get_sample_value(name + "_bucket", {"le": "+Inf"}) == 4
    assert reg.get_sample_value(name + "_count") == 4
    assert abs(reg.get_sample_value(name + "_sum") - 3.033) < 1e-9
    rname = "gpu_sharing_router_request_duration_seconds"
    assert reg.get_sample_value(rname + "_bucket", {"le": "0.001"}) == 1
    assert reg.get_sample_value(rname + "_count") == 2


def test_exposition_names_have_prefix():
    text = generate_latest(make(sample_snapshot(), DaemonCounters(reconcile_durations_s=[0.01]))).decode()
    names = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")}
    assert names and all(n.startswith("gpu_sharing_") for n in names)


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_collector_output_passes_promtool():
    counters = DaemonCounters(reconcile_durations_s=[0.01, 0.2], router_durations_s=[0.002],
                              router_requests={("qwen", "200"): 3}, vram_violations={("qwen-0", "restart"): 1})
    counters.reload_total["error"] = 1
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=generate_latest(make(sample_snapshot(), counters)),
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout + r.stderr).decode()
