"""Acceptance of issue 17 (rolling changes): one option of a 4-replica model changes under a client sending a
chat request every 50 ms through the router of the real daemon (`gpu-sharing run --simulate`).

Every request must succeed (the router drains a replica before it is stopped and sends only to READY
ones), and at no sample may more than one replica of the model be down (not READY).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cli_process
import pytest
import yaml

from test_recovery import QWEN, free_port, get_json, wait_for

pytestmark = pytest.mark.integration


def write(cfg: Path, api_port: int, port_base: int, max_num_seqs: int) -> None:
    doc = {"version": "v1",
           "node": {"backend": "simulated", "simulator": {"gpu_model": "MI300X", "gpus": 1, "startup_time_s": 0.3}},
           "models": [{"name": "qwen", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN, "replicas": 4,
                       "max_model_len": 2048, "max_num_seqs": max_num_seqs}],
           "vllm": {"port_range": [port_base, port_base + 30], "stop_grace_s": 3, "startup_timeout_s": 20,
                    "health_interval_s": 0.2},
           "api": {"port": api_port}, "reconcile": {"interval_s": 3600}, "on_exit": "stop"}
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, cfg)


def test_four_replicas_roll_one_at_a_time_without_failed_requests(tmp_path: Path):
    api_port, port_base = free_port(), 36000 + (os.getpid() % 400) * 40
    api = f"http://127.0.0.1:{api_port}"
    cfg, sim, log = tmp_path / "gpu-sharing.yaml", tmp_path / "sim", tmp_path / "daemon.log"
    write(cfg, api_port, port_base, 4)
    proc = cli_process.start(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg)], tmp_path, log=log)
    stop = threading.Event()
    results: list[int] = []
    down_samples: list[int] = []

    def client() -> None:
        body = json.dumps({"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
        while not stop.wait(0.05):
            req = urllib.request.Request(api + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                    results.append(r.status)
            except urllib.error.HTTPError as e:
                results.append(e.code)
            except OSError:
                results.append(-1)
            inst = [i for i in get_json(api + "/status")["instances"] if i["model"] == "qwen"]
            down_samples.append(4 - sum(i["state"] == "READY" for i in inst))

    def ready4():
        inst = get_json(api + "/status")["instances"]
        return {i["instance_id"]: i["pid"] for i in inst} if len(inst) == 4 and all(
            i["state"] == "READY" for i in inst) else None

    try:
        before = wait_for(ready4, 30, "4 READY replicas")
        t = threading.Thread(target=client, daemon=True)
        t.start()
        wait_for(lambda: len(results) >= 5, 10, "the client's first answers")
        write(cfg, api_port, port_base, 8)  # one option changed: every replica must be replaced
        after = wait_for(lambda: (lambda r: r if r and not set(r.values()) & set(before.values()) else None)(ready4()),
                         60, "4 READY replicas, all replaced")
        n = len(results)
        wait_for(lambda: len(results) >= n + 5, 10, "answers after the change")
        stop.set()
        t.join(timeout=15)
        assert set(after) == set(before)
        assert results and all(code == 200 for code in results), {c: results.count(c) for c in set(results)}
        assert max(down_samples) <= 1, down_samples
        assert max(down_samples) == 1  # the change really went through while sampled
        events = [e for e in get_json(api + "/status")["events"] if e["kind"] == "rolling"]
        assert any("replacing qwen-" in e["message"] for e in events), events
    except BaseException:
        sys.stderr.write(log.read_text()[-6000:] if log.exists() else "")
        raise
    finally:
        stop.set()
        proc.stop(timeout=30)
