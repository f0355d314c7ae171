"""Acceptance of issue 6 on a simulated 8 x MI300X with real fake-vLLM processes on loopback.

One 70B bf16 and sixteen 8B models (inline llama-3.1-shaped config.json, so sizing needs no network):
apply -> right modes, all READY, each answers /v1/chat/completions for its own name (wall time printed);
apply again -> zero actions, same pids; kill one fake vLLM -> restarted with backoff, READY, others keep
pids; a forced over-committed placement fails only that instance with vLLM's error text;
`gpu-sharing stop --all` leaves no process of ours and all simulated VRAM released.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

from gpu_sharing.cli import main as cli
from gpu_sharing.config.loader import load_config
from gpu_sharing.config.schema import BackendKind
from gpu_sharing.backends.factory import make_backend_with_reason
from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.types import Placement
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.spawner import pid_alive
from simulator.node import SimNode

LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
LLAMA_70B = {**LLAMA_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
             "num_attention_heads": 64}


def write_config(path: Path, extra_models: list[dict] | None = None) -> Path:
    models = [{"name": "llama-70b", "source": "meta-llama/Llama-3.1-70B-Instruct", "config_json": LLAMA_70B,
               "max_model_len": 4096, "max_num_seqs": 8, "dtype": "bfloat16"}]
    # Sixteen different 8B fine-tunes (distinct sources), so dedupe keeps them as sixteen instances.
    models += [{"name": f"llama-8b-{i:02d}", "source": f"org/llama-3.1-8b-ft{i:02d}", "config_json": LLAMA_8B,
                "max_model_len": 4096, "max_num_seqs": 8, "dtype": "bfloat16"} for i in range(16)]
    models += extra_models or []
    cfg = {"version": "v1", "node": {"backend": "simulated", "simulator": {"startup_time_s": 0.2}},
           "models": models,
           "vllm": {"port_range": [23100, 23399], "stop_grace_s": 3, "startup_timeout_s": 20, "max_restarts": 1,
                    "backoff_initial_s": 0.1, "backoff_max_s": 0.2, "health_interval_s": 0.5}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def tick_until(rec, pred, timeout_s=20.0) -> bool:
    """Poll with a deadline: tick the reconciler until pred() holds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec.tick()
        if pred():
            return True
        pause.wait(0.02)
    return pred()


def chat(url: str, model: str) -> dict:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def new_reconciler(cfg_path: Path, sim: Path) -> Reconciler:
    backend, _ = make_backend_with_reason(BackendKind.SIMULATED, sim_state_dir=sim)
    return Reconciler(load_config(cfg_path), backend, state_dir=sim / "daemon", config_path=str(cfg_path),
                      simulate=True, sim_state_dir=sim)


def pids(rec) -> dict[str, int | None]:
    return {s.instance_id: s.pid for s in rec.statuses()}


def test_apply_70b_and_sixteen_8b_on_simulated_mi300x(tmp_path, capsys):
    sim = tmp_path / "sim"
    SimNode.create(sim, "MI300X", 8)
    cfg_path = write_config(tmp_path / "gs.yaml")
    rec = new_reconciler(cfg_path, sim)
    t0 = time.monotonic()
    try:
        report = rec.reconcile_once()
        assert report.ok, report.errors
        assert not report.plan.unplaceable
        assert rec.wait_settled(30)
        wall_s = time.monotonic() - t0
        statuses = rec.statuses()
        assert len(statuses) == 17 and {s.state for s in statuses} == {InstanceState.READY}, \
            [(s.instance_id, s.state, s.last_error) for s in statuses if s.state != InstanceState.READY]
        inv = rec.backend.inventory()
        for target in report.plan.gpus:
            g = inv.gpu(target.gpu)
            assert (g.compute_mode, g.memory_mode) == (target.compute_mode, target.memory_mode)
        for s in statuses:
            assert chat(s.url, s.served_names[0])["model"] == s.served_names[0]
        with capsys.disabled():
            print(f"\n[apply_sim] 17 instances READY in {wall_s:.2f}s wall "
                  f"(fake startup 0.2 s each; modes {[f'{t.compute_mode.value}' for t in report.plan.gpus]})")
        first = pids(rec)
        assert not rec.recorder.errors and len(rec.recorder.recorded) == 17
        measured = json.loads((sim / "daemon" / "measured_sizes.json").read_text())
        assert measured, "measured sizes recorded once READY"
        rec.detach()

        # apply again (a new process would do the same): zero actions, same pids
        rec = new_reconciler(cfg_path, sim)
        assert sorted(rec.adopt()) == sorted(first)
        again = rec.reconcile_once()
        assert again.ok and again.actions == 0, again.plan.actions
        assert pids(rec) == first

        # kill one fake vLLM: restarted with backoff, READY again; the others keep their pids
        victim = "llama-8b-03-0" if "llama-8b-03-0" in first else sorted(first)[1]
        os.kill(first[victim], signal.SIGKILL)
        assert tick_until(rec, lambda: pids(rec)[victim] not in (None, first[victim])
                          and rec.supervisor.state_of(victim) == InstanceState.READY)
        after = pids(rec)
        assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in first.items() if k != victim}

        # a forced over-committed placement: only that instance fails, with vLLM's error text
        extra = {"name": "extra-8b", "source": "org/llama-3.1-8b-extra", "config_json": LLAMA_8B,
                 "max_model_len": 4096, "max_num_seqs": 8, "replicas": 0}
        rec.update_config(load_config(write_config(tmp_path / "gs.yaml", [extra])))
        victim_status = next(s for s in rec.statuses() if s.instance_id == victim)
        gpu_s, idx_s = victim_status.partitions[0].split(".")
        part = rec.backend.inventory().partition(PartitionRef(int(gpu_s), int(idx_s)))
        forced = Placement(instance_id="extra-8b-0", model="extra-8b", replica=0, partitions=(part.ref,), tp=1,
                           memory_bytes_per_rank=part.vram_total_bytes, partition_bytes=part.vram_total_bytes)
        plan = replace(rec.last_plan, to_start=(forced,), to_stop=(), to_repartition=(), placements=(forced,),
                       actions=())
        result = rec.apply_plan(plan)
        assert result.started == ("extra-8b-0",)
        assert tick_until(rec, lambda: rec.supervisor.state_of("extra-8b-0") == InstanceState.FAILED)
        failed = next(s for s in rec.statuses() if s.instance_id == "extra-8b-0")
        assert "Free memory on device" in failed.last_error
        assert {k: v for k, v in pids(rec).items() if k != "extra-8b-0"} == after
        assert all(s.state == InstanceState.READY for s in rec.statuses() if s.instance_id != "extra-8b-0")
        rec.detach()
        live = [p for p in after.values() if p]
    finally:
        code = cli.main(["stop", "--all", "--simulate", "--sim-state", str(sim), "-c", str(cfg_path)])
    assert code == 0
    assert not any(pid_alive(p) for p in live)
    inv = new_reconciler(cfg_path, sim).backend.inventory()
    assert all(p.vram_used_bytes == 0 and not p.processes for g in inv.gpus for p in g.partitions)
