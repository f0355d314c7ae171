"""dashboards/gpu-sharing.json and config/prometheus-scrape.yaml stay in step with the exported names.

Every gpu_sharing_* series a panel queries must be one the collector exports (a rename in
the collector would otherwise silently blank a panel); the scrape config must pass
`promtool check config` when promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gpu_sharing.metrics.collector import DaemonCollector
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import NodeSnapshot

ROOT = Path(__file__).resolve().parents[2]


def exported_names() -> set[str]:
    reg = CollectorRegistry()
    reg.register(DaemonCollector(NodeSnapshot))
    metrics = DaemonMetrics(reg)
    metrics.instance_restarts.labels(instance="m-0", model="m").inc()
    metrics.observe_request("m", 200, 0.1)
    text = generate_latest(reg).decode()
    names = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")}
    samples = {re.split(r"[{ ]", ln)[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    return names | samples


def test_dashboard_queries_exported_metrics():
    dash = json.loads((ROOT / "dashboards" / "gpu-sharing.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"gpu_sharing_[a-z_]+", e)}
    assert used and used <= exported_names(), used - exported_names()
    assert any("vllm:" in e for e in exprs)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_scrape_config_valid():
    r = subprocess.run(["promtool", "check", "config", str(ROOT / "config" / "prometheus-scrape.yaml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
