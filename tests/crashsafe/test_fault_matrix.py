"""Fault matrix: SIGKILL `gpu-sharing apply` right after each journaled step of a repartition (with a driver
reload) and of a start, including in the middle of the driver reload, then apply again. Every case must converge
with 0 duplicates, 0 orphans, 0 leaked VRAM and 0 FAILED (no instance restarted with a stale argv/device).

The kill points are the journal's failpoints (runtime/journal.py, GPU_SHARING_FAILPOINT=op[:n][@delay_s]): the
process dies right after the n-th record of that op is durable, so each case kills at exactly one step.
The cases are chained (A -> B -> A ...), each one a repartition SPX+NPS1 <-> CPX+NPS4 of the simulated MI300X,
so one converged node is the starting point of the next case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cli_process
import pytest

from gpu_sharing.cli import main as cli
from gpu_sharing.runtime.journal import FAILPOINT_ENV
from gpu_sharing.runtime.markers import scan_marked
from gpu_sharing.runtime.spawner import group_pids
from simulator.node import SimNode

pytestmark = pytest.mark.integration
QWEN = ("{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, "
        "num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true}")
MODES = {"A": ("SPX", "NPS1"), "B": ("CPX", "NPS4")}
CASES = ["stop", "stopped", "repartition", "reload", "reload:1@0.4", "repartitioned", "spawn", "spawned"]
"""Each journaled step once: stop intent/result, repartition intent, reload intent, mid-reload, repartition
result, spawn intent/result. One instance keeps the matrix affordable on a loaded 2-core machine (each case is
two CLI runs and one vLLM start); duplicates are still counted per instance id from the OS markers."""


def write_config(tmp_path: Path, name: str, port: int) -> Path:
    compute, memory = MODES[name]
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""version: v1
node: {{allow_driver_reload: true, simulator: {{startup_time_s: 0.1}}}}
gpus:
  - {{devices: [0], compute_partition: {compute}, memory_partition: {memory}}}
models:
  - {{name: a, source: org/a, config_json: {QWEN}, max_model_len: 2048}}
vllm: {{port_range: [{port}, {port + 30}], stop_grace_s: 3}}
""")
    return p


def apply(sim: Path, cfg: Path, failpoint: str | None = None) -> cli_process.CliProcess:
    """`gpu-sharing apply` in a process of its own (forked from a server that imported the CLI once)."""
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return cli_process.run(["apply", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--yes"], cfg.parent,
                           env=env, timeout=120)


def check_converged(sim: Path, name: str) -> None:
    state_dir = sim / "daemon"
    entries = json.loads((state_dir / "instances.json").read_text())["instances"]
    assert sorted(e["instance_id"] for e in entries) == ["a-0"]
    assert {e["state"] for e in entries} == {"READY"}  # 0 FAILED
    marked = scan_marked(state_dir)
    assert sorted(g.instance_id for g in marked) == ["a-0"]  # 0 duplicates, 0 orphans of ours
    node = SimNode.open(sim)
    groups = {pid for e in entries for pid in group_pids(e["pgid"])}  # vLLM V1: EngineCore children hold VRAM
    holders = {p["pid"] for p in node.processes()}
    assert holders and holders <= groups  # 0 leaked VRAM
    gpu = node.state()["gpus"][0]
    assert (gpu["compute_mode"], gpu["memory_mode"], gpu.get("pending_memory_mode")) == (*MODES[name], None)
    hips = {p["hip_index"] for p in node.partitions()}
    assert all(set(e["hip_indices"]) <= hips for e in entries)  # devices from the current inventory


def converge(sim: Path, cfg: Path, capsys) -> tuple[int, str]:
    """The recovering apply, in-process (the killed one must be a process of its own; this one need not)."""
    code = cli.main(["apply", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--yes"])
    return code, capsys.readouterr().err


def test_sigkill_after_each_journaled_step_converges(tmp_path, capsys):
    sim = tmp_path / "sim"
    SimNode.create(sim, "MI300X", 1, reload_time_s=1.0)
    configs = {n: write_config(tmp_path, n, 26300) for n in MODES}
    first = apply(sim, configs["A"])
    assert first.poll() == 0, first.stderr[-2000:]
    current, results = "A", []
    try:
        for case in CASES:
            target = "B" if current == "A" else "A"
            killed = apply(sim, configs[target], failpoint=case)
            assert killed.poll() == -9, f"{case}: the step never happened: {killed.stderr[-1500:]}"
            again = converge(sim, configs[target], capsys)
            assert again[0] == 0, f"after SIGKILL at {case}: {again[1][-2500:]}"
            check_converged(sim, target)
            results.append(case)
            current = target
    finally:
        cli_process.run(["stop", "--all", "--simulate", "--sim-state", str(sim), "-c", str(configs[current])], tmp_path,
                        timeout=60)
    assert results == CASES
    assert SimNode.open(sim).processes() == [] and scan_marked(sim / "daemon") == []
