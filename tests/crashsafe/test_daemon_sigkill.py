"""The daemon itself SIGKILLed right after it journaled a spawn (before the state file knows the pid), then
started again: it adopts the instance by its marker, starts nothing twice, leaves no orphan or leaked VRAM; and a
second daemon on the same state dir is refused while the first runs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import cli_process
import pytest
import yaml

from gpu_sharing.runtime.journal import FAILPOINT_ENV
from gpu_sharing.runtime.markers import scan_marked
from gpu_sharing.runtime.spawner import group_pids
from simulator.node import SimNode

pytestmark = pytest.mark.integration
QWEN = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


def daemon(cfg: Path, sim: Path, log: Path, failpoint: str | None = None) -> cli_process.CliProcess:
    """`gpu-sharing run` in a process and session of its own (forked from a server that imported the CLI once)."""
    env = {k: v for k, v in os.environ.items() if k not in (FAILPOINT_ENV, "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return cli_process.start(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--api-port", "0"],
                             log.parent, env=env, log=log)


def wait_for(pred, timeout_s: float, what: str):
    pause, deadline, last = threading.Event(), time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError) as e:
            last = e
        else:
            if last:
                return last
        pause.wait(0.1)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


def api_url(log: Path, after: int) -> str | None:
    text = log.read_text()[after:]
    for line in text.splitlines():
        if "start: API on " in line:
            return line.split("start: API on ", 1)[1].strip()
    return None


def test_daemon_sigkilled_after_a_spawn_recovers_without_duplicate(tmp_path):
    sim = tmp_path / "sim"
    SimNode.create(sim, "MI300X", 1, reload_time_s=0)
    cfg = tmp_path / "gs.yaml"
    cfg.write_text(yaml.safe_dump({
        "version": "v1", "node": {"simulator": {"startup_time_s": 0.1}},
        "models": [{"name": "a", "source": "org/a", "config_json": QWEN, "max_model_len": 1024}],
        "vllm": {"port_range": [26700, 26730], "stop_grace_s": 3, "health_interval_s": 0.5},
        "reconcile": {"interval_s": 3600}, "on_exit": "stop"}))
    log = tmp_path / "daemon.log"
    first = daemon(cfg, sim, log, failpoint="spawned:1")
    assert first.wait(timeout=120) == -signal.SIGKILL, log.read_text()[-2000:]
    orphan = scan_marked(sim / "daemon")
    assert [g.instance_id for g in orphan] == ["a-0"]  # running, and the state file does not know its pid
    mark = len(log.read_text())
    second = daemon(cfg, sim, log)
    try:
        api = wait_for(lambda: api_url(log, mark), 60, "the API line")
        refused = cli_process.run(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--api-port", "0"],
                                  tmp_path, timeout=60)
        assert refused.poll() == 1 and f"pid {second.pid}" in refused.stderr
        inst = wait_for(lambda: [i for i in json.loads(urllib.request.urlopen(api + "/status", timeout=5).read())[
            "instances"] if i["state"] == "READY"], 60, "a-0 READY")
        assert [(i["instance_id"], i["pid"]) for i in inst] == [("a-0", orphan[0].leader)]  # adopted, not restarted
        groups = scan_marked(sim / "daemon")
        assert [g.pgid for g in groups] == [orphan[0].pgid]  # 0 duplicates
        holders = {p["pid"] for p in SimNode.open(sim).processes()}  # vLLM V1: the EngineCore child holds the VRAM
        assert holders and holders <= set(group_pids(orphan[0].pgid))  # 0 leaked VRAM: only the adopted group
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert scan_marked(sim / "daemon") == [] and SimNode.open(sim).processes() == []
