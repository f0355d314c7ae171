"""VRAM over budget: warn / restart / stop per memory_policy; foreign processes are reported, never killed.

Real fake-vLLM processes on a simulated node; the fake grows its VRAM after start
(GPU_SHARING_FAKE_GROW_BYTES), like a leak would.
"""

from __future__ import annotations

import os

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.spawner import pid_alive
from simulator.node import SimNode

pytestmark = pytest.mark.integration
GIB = 1024**3
QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def daemon_for(tmp_path, policy: str, port: int) -> Daemon:
    SimNode.create(tmp_path / "sim", "MI300X", 1, compute_mode="CPX")
    text = f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
models:
  - name: leaky
    source: org/leaky
    config_json: {QWEN}
    max_model_len: 2048
    limits: {{memory_policy: {policy}}}
    env: {{GPU_SHARING_FAKE_GROW_BYTES: "{8 * GIB}"}}
vllm: {{port_range: [{port}, {port + 20}], stop_grace_s: 5}}
"""
    cfg = parse_config_text(text, "t.yaml")
    backend = SimulatedBackend(SimNode.open(tmp_path / "sim"))
    rec = Reconciler(cfg, backend, state_dir=tmp_path / "state", simulate=True, sim_state_dir=tmp_path / "sim")
    return Daemon(str(tmp_path / "t.yaml"), rec)


def start(d: Daemon) -> int:
    d.reconcile_pass()
    assert d.reconciler.wait_settled(timeout_s=20)
    st = d.reconciler.statuses()[0]
    assert st.state.value == "READY"
    return st.pid


@pytest.mark.parametrize("policy", ["warn", "restart", "stop"])
def test_memory_policy(tmp_path, policy):
    d = daemon_for(tmp_path, policy, 25100 + ["warn", "restart", "stop"].index(policy) * 30)
    try:
        pid = start(d)
        holders = SimNode.open(d.reconciler.sim_state_dir).processes()
        # vLLM V1: the EngineCore child holds the VRAM, not the spawned `vllm serve` pid
        assert [(p["name"], p["pid"] != pid, os.getpgid(p["pid"]) == pid) for p in holders] == [
            ("VLLM::EngineCore", True, True)]
        d.vram_pass()
        assert any(e["kind"] == "vram-over-budget" for e in d.events)
        assert not any(e["kind"] == "foreign-process" for e in d.events)  # our EngineCore child is not foreign
        assert d.registry.get_sample_value("gpu_sharing_vram_violations_total",
                                           {"instance": "leaky-0", "action": policy}) == 1
        statuses = {s.instance_id: s for s in d.reconciler.statuses()}
        if policy == "warn":
            assert statuses["leaky-0"].pid == pid and pid_alive(pid)
        elif policy == "restart":
            assert d.reconciler.wait_settled(timeout_s=20)
            new = {s.instance_id: s for s in d.reconciler.statuses()}["leaky-0"]
            assert new.pid != pid and new.state.value == "READY"
        else:
            assert "leaky-0" in d.reconciler.held
            assert all(s.state.value == "STOPPED" or s.instance_id != "leaky-0" for s in d.reconciler.statuses()) \
                or "leaky-0" not in statuses
            assert not pid_alive(pid)
    finally:
        d.reconciler.stop_all(timeout_s=10)


def test_foreign_process_is_reported_not_killed(tmp_path):
    d = daemon_for(tmp_path, "warn", 25200)
    try:
        start(d)
        SimNode.open(tmp_path / "sim").claim_memory(0, os.getpid(), "python-foreign", GIB, synthetic=True)
        d.vram_pass()
        assert d.registry.get_sample_value("gpu_sharing_foreign_processes") == 1
        assert any(e["kind"] == "foreign-process" and str(os.getpid()) in e["message"] for e in d.events)
        assert pid_alive(os.getpid())
    finally:
        d.reconciler.stop_all(timeout_s=10)
