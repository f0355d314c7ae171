"""Acceptance of issue 17 (recovery): the real daemon (`gpu-sharing run --simulate`) on loopback.

kill -9 an instance -> one log line naming the instance, the exit code and the restart;
kill it again past vllm.max_restarts -> FAILED (event + log line); `gpu-sharing restart`
-> READY with a clean history; `gpu-sharing hold` stops it without counting a crash or
a restart, `stop MODEL` under the daemon is a hold too, `release` starts it again;
`gpu-sharing logs` shows the instance's vLLM log.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cli_process
import pytest
import yaml

from gpu_sharing.cli.main import main

from test_daemon_integration import free_port, get_json, wait_for  # the daemon tests' shared helpers

pytestmark = pytest.mark.integration

QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (its import takes seconds; the daemon is the subprocess under test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def post(api: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def metric(api: str, name: str, labels: str) -> float:
    text = urllib.request.urlopen(api + "/metrics", timeout=5).read().decode()
    line = next((ln for ln in text.splitlines() if ln.startswith(f"{name}{{{labels}}}")), None)
    return float(line.split()[-1]) if line else 0.0


def test_kill_failed_restart_hold_release(tmp_path: Path):
    api_port, port_base = free_port(), 33000 + (os.getpid() % 400) * 40
    api = f"http://127.0.0.1:{api_port}"
    cfg, sim, log = tmp_path / "gpu-sharing.yaml", tmp_path / "sim", tmp_path / "daemon.log"
    cfg.write_text(yaml.safe_dump({
        "version": "v1",
        "node": {"backend": "simulated", "simulator": {"gpu_model": "MI300X", "gpus": 1, "startup_time_s": 0.2}},
        "models": [{"name": "qwen", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN,
                    "max_model_len": 2048, "max_num_seqs": 4}],
        "vllm": {"port_range": [port_base, port_base + 30], "stop_grace_s": 3, "startup_timeout_s": 20,
                 "health_interval_s": 0.2, "max_restarts": 1, "backoff_initial_s": 0.2, "backoff_max_s": 0.5},
        "api": {"port": api_port}, "reconcile": {"interval_s": 3600}, "on_exit": "stop"}, sort_keys=False))
    proc = cli_process.start(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg)], tmp_path, log=log)
    pids: set[int] = set()

    def inst() -> dict:
        i = get_json(api + "/status")["instances"]
        if i and i[0]["pid"]:
            pids.add(i[0]["pid"])
        return i[0] if i else {}

    def ready_pid(other_than: int | None = None):
        i = inst()
        return i["pid"] if i.get("state") == "READY" and i["pid"] != other_than else None

    try:
        pid = wait_for(ready_pid, 20, "qwen-0 READY")
        os.kill(pid, signal.SIGKILL)
        crash = wait_for(lambda: [ln for ln in log.read_text().splitlines() if "crash instance=qwen-0" in ln], 10,
                         "a crash log line")
        assert "exit code -9" in crash[0] and "restarting in" in crash[0], crash
        pid2 = wait_for(lambda: ready_pid(pid), 20, "qwen-0 READY again after the crash")
        assert metric(api, "gpu_sharing_instance_restarts_total", 'instance="qwen-0",model="qwen"') == 1
        assert metric(api, "gpu_sharing_instance_crashes_total", 'model="qwen"') == 1

        os.kill(pid2, signal.SIGKILL)  # second failure within the window, max_restarts 1 -> FAILED
        wait_for(lambda: inst().get("state") == "FAILED", 10, "FAILED")
        kinds = [e["kind"] for e in get_json(api + "/status")["events"]]
        assert "failed" in kinds and "crash" in kinds
        assert any("failed instance=qwen-0" in ln for ln in log.read_text().splitlines())

        r = cli("restart", "qwen", "--api", api, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["instances"] == ["qwen-0"]
        pid3 = wait_for(lambda: ready_pid(pid2), 20, "READY after `gpu-sharing restart`")

        logs = cli("logs", "qwen-0", "--api", api, "-n", "5", "--json")
        assert logs.returncode == 0 and 0 < len(json.loads(logs.stdout)["lines"]) <= 5, logs.stderr
        with pytest.raises(urllib.error.HTTPError) as e:
            get_json(api + "/logs/nope-0")
        assert e.value.code == 404

        restarts = metric(api, "gpu_sharing_instance_restarts_total", 'instance="qwen-0",model="qwen"')
        crashes = metric(api, "gpu_sharing_instance_crashes_total", 'model="qwen"')
        r = cli("hold", "qwen", "--api", api)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not get_json(api + "/status")["instances"], 10, "qwen-0 stopped by the hold")
        status = get_json(api + "/status")
        assert "qwen" in status["held_models"]
        card = get_json(api + "/v1/models")["data"][0]
        assert card["id"] == "qwen" and card["held"] and not card["ready"]
        assert not get_json(api + "/status")["instances"]  # the reconcile after the hold started nothing
        assert cli("release", "qwen", "--api", api).returncode == 0
        pid4 = wait_for(lambda: ready_pid(pid3), 20, "READY after release")
        r = cli("stop", "qwen", "--api", api)  # under a running daemon: a hold, not a crash
        assert r.returncode == 0 and "hold" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: not get_json(api + "/status")["instances"], 10, "stopped by `stop` = hold")
        assert post(api, "/admin/release", {"target": "qwen"})["ok"]  # the endpoint behind `release`
        wait_for(lambda: ready_pid(pid4), 20, "READY after the second release")
        assert metric(api, "gpu_sharing_instance_restarts_total", 'instance="qwen-0",model="qwen"') == restarts
        assert metric(api, "gpu_sharing_instance_crashes_total", 'model="qwen"') == crashes
        assert inst()["restarts"] == 0
    except BaseException:
        sys.stderr.write(log.read_text()[-6000:] if log.exists() else "")
        raise
    finally:
        proc.stop(timeout=20)
        for p in pids:  # only after a failure: our fake vLLMs still alive
            try:
                if b"vllm_server" in Path(f"/proc/{p}/cmdline").read_bytes():
                    os.kill(p, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
