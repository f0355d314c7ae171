"""Acceptance of issue 7: the real daemon (`gpu-sharing run --simulate`) as a subprocess on loopback.

One scenario, in order, because each step builds on the running daemon: READY=1 over
NOTIFY_SOCKET, all instances READY, chat answered through the router for each model;
add a model (file watch) -> only it starts; change max_model_len -> only it restarts;
invalid config -> reload-error event with the key path, error metric, still serving;
kill -9 + restart -> adopts every instance (same pids, unique ports); SIGTERM ->
STOPPING=1 and no fake vLLM left (on_exit: stop). Waits poll with deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cli_process
import pytest
import yaml

pytestmark = pytest.mark.integration

QWEN_05B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model(name: str, max_model_len: int = 2048) -> dict:
    return {"name": name, "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN_05B,
            "max_model_len": max_model_len, "max_num_seqs": 4, "dtype": "bfloat16",
            # explicit shares: the three share GPU 0's one partition, and a newcomer takes CUs no running
            # neighbour holds (with equal splits every add would rebalance, restarting the others)
            "limits": {"compute_share": 0.25}}


def write_config(path: Path, models: list[dict], api_port: int, port_base: int) -> None:
    cfg = {"version": "v1",
           "node": {"backend": "simulated", "simulator": {"gpu_model": "MI300X", "gpus": 1, "startup_time_s": 0.2}},
           "models": models,
           "vllm": {"port_range": [port_base, port_base + 49], "stop_grace_s": 3, "startup_timeout_s": 20,
                    "health_interval_s": 0.5},
           "api": {"port": api_port},
           "reconcile": {"interval_s": 3600},
           "on_exit": "stop"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, path)


def wait_for(pred, timeout_s: float, what: str):
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError) as e:  # daemon not listening yet / mid-restart
            last = e
        else:
            if last:
                return last
        pause.wait(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def chat(api: str, name: str) -> dict:
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    req = urllib.request.Request(api + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


SEEN_PIDS: set[int] = set()


def instances(api: str) -> dict[str, dict]:
    inst = {i["instance_id"]: i for i in get_json(api + "/status")["instances"]}
    SEEN_PIDS.update(i["pid"] for i in inst.values() if i["pid"])
    return inst


def all_ready(api: str, n: int):
    inst = instances(api)
    return inst if len(inst) == n and all(i["state"] == "READY" for i in inst.values()) else None


class Notify:
    """The datagram socket systemd would own; collects every message the daemon sends."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def seen(self, field: str, after: int = 0) -> bool:
        return any(field in m.split("\n") for m in self.drain()[after:])


def start_daemon(cfg: Path, sim: Path, api_port: int, notify_path: Path, log: Path) -> cli_process.CliProcess:
    """`gpu-sharing run` in a process and session of its own (forked from a server that imported the CLI once)."""
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    env.pop("WATCHDOG_USEC", None)
    return cli_process.start(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--api-port", str(api_port)],
                             log.parent, env=env, log=log)


def fake_vllm_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "simulator.vllm_server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_daemon_end_to_end(tmp_path: Path):
    api_port, port_base = free_port(), 31000 + (os.getpid() % 500) * 50
    api = f"http://127.0.0.1:{api_port}"
    cfg, sim, log = tmp_path / "gpu-sharing.yaml", tmp_path / "sim", tmp_path / "daemon.log"
    notify = Notify(tmp_path / "notify.sock")
    # distinct context lengths: identical entries would be folded into one shared vLLM (reconcile/dedupe.py)
    models = [model("qwen-a", 2048), model("qwen-b", 1536)]
    write_config(cfg, models, api_port, port_base)
    proc = start_daemon(cfg, sim, api_port, tmp_path / "notify.sock", log)
    procs = [proc]
    try:
        wait_for(lambda: notify.seen("READY=1"), 20, "READY=1 on NOTIFY_SOCKET")
        first = wait_for(lambda: all_ready(api, 2), 15, "2 READY instances")
        for name in ("qwen-a", "qwen-b"):
            assert chat(api, name)["model"] == name
        status = cli_process.run(["status", "--api", api, "--json"], tmp_path, timeout=30)
        assert status.poll() == 0, status.stderr
        assert {i["instance_id"]: i["pid"] for i in json.loads(status.stdout)["instances"]} == \
            {k: v["pid"] for k, v in first.items()}
        table = cli_process.run(["status", "-c", str(cfg)], tmp_path, timeout=30)
        assert table.poll() == 0, table.stderr
        for iid, inst in first.items():
            assert iid in table.stdout and str(inst["pid"]) in table.stdout and "READY" in table.stdout
        assert "MI300X" in table.stdout and "Last reconcile" in table.stdout
        promtool = shutil.which("promtool")
        if promtool:  # Prometheus' linter on a real scrape (skipped silently here; test_collector reports the skip)
            scrape = urllib.request.urlopen(api + "/metrics", timeout=5).read()
            assert b"gpu_sharing_router_requests_total" in scrape
            r = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=30)
            assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (r.stdout + r.stderr).decode()

        # add a model: the file watch reloads; only the new one starts
        models.append(model("qwen-c", 1792))
        write_config(cfg, models, api_port, port_base)
        grown = wait_for(lambda: all_ready(api, 3), 15, "3 READY instances after adding qwen-c")
        for iid, inst in first.items():
            assert grown[iid]["pid"] == inst["pid"], f"{iid} was restarted by an unrelated add"
        assert chat(api, "qwen-c")["model"] == "qwen-c"

        # change max_model_len of qwen-b: only it restarts
        models[1] = model("qwen-b", max_model_len=1024)
        write_config(cfg, models, api_port, port_base)
        changed = wait_for(lambda: (lambda s: s if s and all(
            s[i]["pid"] != grown[i]["pid"] for i in s if s[i]["model"] == "qwen-b") else None)(all_ready(api, 3)),
            15, "qwen-b restarted and READY")
        for iid, inst in changed.items():
            if inst["model"] != "qwen-b":
                assert inst["pid"] == grown[iid]["pid"], f"{iid} restarted though only qwen-b changed"

        # invalid config: rejected with the key path; metric up; still serving
        bad = yaml.safe_load(cfg.read_text())
        bad["models"][0]["max_model_len"] = "lots"
        cfg.write_text(yaml.safe_dump(bad, sort_keys=False))
        ev = wait_for(lambda: [e for e in get_json(api + "/status")["events"] if e["kind"] == "reload-error"],
                      10, "a reload-error event")
        assert "max_model_len" in ev[-1]["message"] and "models" in ev[-1]["message"], ev[-1]
        metrics = urllib.request.urlopen(api + "/metrics", timeout=5).read().decode()
        line = next(ln for ln in metrics.splitlines() if ln.startswith('gpu_sharing_config_reload_total{result="error"}'))
        assert float(line.split()[-1]) >= 1
        assert instances(api) == changed or {k: v["pid"] for k, v in instances(api).items()} == \
            {k: v["pid"] for k, v in changed.items()}
        for name in ("qwen-a", "qwen-b", "qwen-c"):
            assert chat(api, name)["model"] == name
        write_config(cfg, models, api_port, port_base)  # restore a valid file for the restart

        # kill -9 the daemon, start again: adoption, same pids, unique ports, serving
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        after = len(notify.drain())
        proc = start_daemon(cfg, sim, api_port, tmp_path / "notify.sock", log)
        procs.append(proc)
        wait_for(lambda: notify.seen("READY=1", after), 20, "READY=1 from the restarted daemon")
        adopted = wait_for(lambda: all_ready(api, 3), 15, "3 READY instances after restart")
        assert {k: v["pid"] for k, v in adopted.items()} == {k: v["pid"] for k, v in changed.items()}
        ports = [v["port"] for v in adopted.values()]
        assert len(set(ports)) == len(ports)
        for name in ("qwen-a", "qwen-b", "qwen-c"):
            assert chat(api, name)["model"] == name
        pids = {v["pid"] for v in adopted.values()}

        # SIGTERM: STOPPING=1, and on_exit: stop leaves no fake vLLM of ours
        before = len(notify.drain())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert notify.seen("STOPPING=1", before)
        assert not (pids & fake_vllm_pids()), "fake vLLM processes left after SIGTERM with on_exit: stop"
        down = cli_process.run(["status", "--api", api], tmp_path, timeout=30)
        assert down.poll() == 1 and "cannot reach" in down.stderr and api in down.stderr
    except BaseException:
        sys.stderr.write(log.read_text()[-6000:] if log.exists() else "")
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for pid in SEEN_PIDS & fake_vllm_pids():  # only our instances, only after a failure
            os.kill(pid, signal.SIGKILL)
        notify.sock.close()
