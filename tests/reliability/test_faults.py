"""Faults injected through the simulator: the daemon keeps serving what is unaffected, reports, retries.

A failed repartition of GPU 1 spares GPU 0; the retried compute change then drains the node (the strict
KFD rule, simulator/node_modes.py) and restores every instance."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gpu_sharing.backends.amd_smi_cli_backend import AmdSmiCliBackend
from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode
from gpu_sharing.reconcile.reconciler import Reconciler
from simulator.node import SimNode

ROOT = Path(__file__).resolve().parents[2]
QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def reconciler(tmp_path: Path, port: int) -> tuple[Reconciler, str]:
    SimNode.create(tmp_path / "sim", "MI300X", 2, reload_time_s=0)
    text = f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
gpus:
  - {{devices: [0], compute_partition: SPX}}
  - {{devices: [1], compute_partition: CPX}}
models:
  - {{name: on-spx, source: org/a, config_json: {QWEN}, max_model_len: 2048, gpus: [0]}}
  - {{name: on-cpx, source: org/b, config_json: {QWEN}, max_model_len: 1024, gpus: [1]}}
vllm: {{port_range: [{port}, {port + 20}], stop_grace_s: 5}}
"""
    cfg = parse_config_text(text, "faults.yaml")
    rec = Reconciler(cfg, SimulatedBackend(SimNode.open(tmp_path / "sim")), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim")
    return rec, text


@pytest.mark.integration
@pytest.mark.parametrize("code", ["BUSY", "TIMEOUT", "NO_PERM"])
def test_failed_repartition_spares_the_other_gpu_and_is_retried(tmp_path, code):
    rec, _ = reconciler(tmp_path, 25400 + ["BUSY", "TIMEOUT", "NO_PERM"].index(code) * 30)
    node = SimNode.open(tmp_path / "sim")
    node.set_fault("set_compute", code, count=1)
    try:
        first = rec.reconcile_once()
        assert any("gpu 1" in e and code in e for e in first.errors), first.errors
        assert rec.wait_settled(timeout_s=20)
        states = {s.instance_id: s.state.value for s in rec.statuses()}
        assert states.get("on-spx-0") == "READY" and "on-cpx-0" not in states  # GPU 0 serves; GPU 1 waits
        spx_pid = {s.instance_id: s.pid for s in rec.statuses()}["on-spx-0"]
        second = rec.reconcile_once()  # the fault is gone: retried and repaired
        assert second.ok, second.errors
        # A real kernel without the KFD cgroup-exclusion change (the simulator's default, kfd_mode_switch:
        # strict) refuses GPU 1's compute change while on-spx-0 runs on GPU 0: the node is drained and restored.
        assert second.apply.stopped == ("on-spx-0",) and set(second.apply.started) == {"on-spx-0", "on-cpx-0"}
        assert rec.wait_settled(timeout_s=20)
        assert {s.instance_id: s.pid for s in rec.statuses()}["on-spx-0"] != spx_pid
        assert {s.instance_id: s.state.value for s in rec.statuses()} == {"on-spx-0": "READY", "on-cpx-0": "READY"}
        assert node.state()["gpus"][1]["compute_mode"] == "CPX"
    finally:
        rec.stop_all(timeout_s=10)


def test_garbage_json_from_amd_smi_is_a_clear_backend_error(tmp_path):
    SimNode.create(tmp_path, "MI300X", 1).set_fault("list", "GARBAGE", count=-1)
    env = {**os.environ, "GPU_SHARING_SIM_STATE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    backend = AmdSmiCliBackend([sys.executable, "-m", "simulator.amd_smi_cli"], env=env)
    with pytest.raises(BackendError) as e:
        backend.inventory()
    assert "invalid JSON" in str(e.value) and "reading the GPU inventory" in str(e.value)


def test_failed_driver_reload_is_reported_and_changes_nothing(tmp_path):
    node = SimNode.create(tmp_path, "MI300X", 2, reload_time_s=0)
    backend = SimulatedBackend(node, sleep=lambda s: None)
    backend.set_memory_mode(0, "NPS4")
    node.set_fault("reload", "RESTART_FAILED")
    with pytest.raises(BackendError) as e:
        backend.reload_driver()
    assert e.value.code == BackendErrorCode.RESTART_FAILED
    assert {g.memory_mode.value for g in backend.inventory().gpus} == {"NPS1"}
    backend.reload_driver()  # the next try succeeds
    assert {g.memory_mode.value for g in backend.inventory().gpus} == {"NPS4"}


@pytest.mark.integration
def test_config_deleted_or_replaced_mid_run_keeps_everything_serving(tmp_path):
    rec, text = reconciler(tmp_path, 25500)
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    daemon = Daemon(str(path), rec)
    try:
        daemon.reconcile_pass()
        assert rec.wait_settled(timeout_s=20)
        pids = {s.instance_id: s.pid for s in rec.statuses()}
        path.unlink()
        result = asyncio.run(daemon.reload("test: file deleted"))
        assert not result["ok"] and "file not found" in result["error"]
        path.write_text("version: v1\nmodels: [{name: x}]\n")  # replaced by a half-written file
        result = asyncio.run(daemon.reload("test: file replaced"))
        assert not result["ok"] and "models[0].source" in result["error"]
        assert daemon.registry.get_sample_value("gpu_sharing_config_reload_total", {"result": "error"}) == 2
        assert {s.instance_id: s.pid for s in rec.statuses()} == pids
        assert all(s.state.value == "READY" for s in rec.statuses())
    finally:
        rec.stop_all(timeout_s=10)
