"""SIGKILL `gpu-sharing apply` after each step; the next apply converges: no duplicate, no orphan, no leaked VRAM."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import cli_process
import pytest

from simulator.node import SimNode

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QWEN = ("{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, "
        "num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true}")
STEPS = ["a-0 .* READY"]
"""After the first instance is READY. The journaled steps (stop, repartition, driver reload, spawn) are
killed one by one in tests/crashsafe/test_fault_matrix.py, which covers what this file used to repeat."""


def config(tmp_path: Path, port: int) -> Path:
    p = tmp_path / "k.yaml"
    p.write_text(f"""version: v1
node: {{simulator: {{startup_time_s: 0.3}}}}
gpus:
  - {{devices: [0], compute_partition: SPX}}
  - {{devices: [1], compute_partition: CPX}}
models:
  - {{name: a, source: org/a, config_json: {QWEN}, max_model_len: 2048, gpus: [1], replicas: 3}}
  - {{name: b, source: org/b, config_json: {QWEN}, max_model_len: 1024, gpus: [0]}}
vllm: {{port_range: [{port}, {port + 20}], stop_grace_s: 3}}
""")
    return p


@pytest.mark.parametrize("step", STEPS)
def test_kill_apply_at_step_then_converge(tmp_path, step):
    import re

    sim = tmp_path / "sim"
    SimNode.create(sim, "MI300X", 2, reload_time_s=0)
    cfg = config(tmp_path, 25800 + STEPS.index(step) * 25)
    common = ["--simulate", "--sim-state", str(sim), "-c", str(cfg)]
    # a process of its own, forked from a server that imported the CLI once (tests/cli_process.py)
    proc = cli_process.start(["apply", *common, "--yes"], tmp_path)
    deadline, pause, seen = time.monotonic() + 30, threading.Event(), []
    try:
        while time.monotonic() < deadline:
            ended = proc.poll() is not None
            seen = proc.stderr.splitlines()
            if any(re.search(step, line) for line in seen):
                os.kill(proc.pid, signal.SIGKILL)  # right after this step
                break
            assert not ended, f"apply ended before {step!r}: {seen[-5:]}"
            pause.wait(0.01)
        else:
            raise AssertionError(f"step {step!r} never printed; last lines {seen[-5:]}")
        proc.wait(timeout=10)
        again = cli_process.run(["apply", *common, "--yes"], tmp_path, timeout=90)
        assert again.poll() == 0, again.stderr[-2000:]
        state = json.loads((sim / "daemon" / "instances.json").read_text())["instances"]
        ids = [e["instance_id"] for e in state]
        assert sorted(ids) == ["a-0", "a-1", "a-2", "b-0"]  # no duplicate instance
        groups = {e["pgid"] for e in state}
        holders = {p["pid"] for p in SimNode.open(sim).processes()}
        # vLLM V1: the VRAM is held by each instance's EngineCore child, in the instance's process group
        assert {os.getpgid(p) for p in holders} == groups and len(holders) == 4, (  # no orphan holding VRAM
            [(e["instance_id"], e["pid"], e["pgid"], e["state"]) for e in state], SimNode.open(sim).processes())
        assert len({e["port"] for e in state}) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
        cli_process.run(["stop", "--all", *common], tmp_path, timeout=60)
    assert SimNode.open(sim).processes() == []
