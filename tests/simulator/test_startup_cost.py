"""The fake vLLM's start-up cost grows with the weights it loads (node.simulator.disk_bandwidth_bytes_per_s)
and includes graph capture unless --enforce-eager (node.simulator.graph_capture_s), like a real cold start."""

from __future__ import annotations

import pytest

from gpu_sharing.config.schema import Config
from gpu_sharing.reconcile.desired import effective_config
from simulator.vllm_memory import startup_seconds

GIB = 1 << 30


def test_weights_at_disk_bandwidth_plus_graphs_unless_eager():
    load_s, graph_s, total = startup_seconds(2.0, 16 * GIB, 2e9, 8.0, enforce_eager=False)
    assert load_s == pytest.approx(16 * GIB / 2e9) and graph_s == 8.0 and total == pytest.approx(2.0 + load_s + 8.0)
    assert startup_seconds(2.0, 16 * GIB, 2e9, 8.0, enforce_eager=True)[2] == pytest.approx(2.0 + load_s)
    assert startup_seconds(2.0, 32 * GIB, 2e9, 0.0, enforce_eager=True)[0] == pytest.approx(2 * load_s)
    assert startup_seconds(0.5, 16 * GIB, 0, 0, enforce_eager=False) == (0.0, 0.0, 0.5)  # 0: instant load


def test_simulator_settings_reach_the_fake_vllm_environment(tmp_path):
    cfg = Config.model_validate({"version": "v1", "models": [{"name": "m", "source": "org/m"}], "node": {
        "simulator": {"startup_time_s": 3, "disk_bandwidth_bytes_per_s": 1.5e9, "graph_capture_s": 7}}})
    env = effective_config(cfg, sim_state_dir=tmp_path).vllm.env
    assert (env["GPU_SHARING_FAKE_STARTUP_S"], env["GPU_SHARING_FAKE_DISK_BYTES_PER_S"],
            env["GPU_SHARING_FAKE_GRAPH_CAPTURE_S"]) == ("3.0", "1500000000.0", "7.0")
