"""Issue 21 acceptance: the real daemon (`gpu-sharing run --simulate`) serves a `min_replicas: 0` model on demand.

One scenario, in order: no replica at start; the first chat request is held, then answered 200 within
the fake start-up time plus 1 s (plus the fake's interpreter start, measured and printed); after
idle_unload_s the replica is gone and its partition's VRAM is free; a burst of slow requests raises
the model to max_replicas, the quiet after lowers it again; every step is an event. Then the queue
limit: requests beyond it get 503 with Retry-After. Waits poll with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cli_process
import pytest
import yaml

from test_daemon_integration import QWEN_05B, free_port, get_json, wait_for

pytestmark = pytest.mark.integration
STARTUP_S = 0.2


def chat(api: int, max_tokens: int = 4, timeout: float = 60, stream: bool = False) -> tuple[int, dict, float]:
    """A chat request; with ``stream`` the fake answers token by token (0.05 s each), the whole SSE body read."""
    body = json.dumps({"model": "lazy", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": max_tokens, "stream": stream}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{api}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            if stream:
                assert data.rstrip().endswith(b"data: [DONE]"), data[-200:]
            return r.status, dict(r.headers), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), time.monotonic() - t0


def lazy_instances(api: int) -> list[dict]:
    return [i for i in get_json(f"http://127.0.0.1:{api}/status")["instances"] if i["model"] == "lazy"]


def events(api: int, kind: str) -> list[str]:
    return [e["message"] for e in get_json(f"http://127.0.0.1:{api}/status")["events"] if e["kind"] == kind]


@pytest.fixture
def daemon(tmp_path):
    api, port_base = free_port(), 26400
    cfg = {"version": "v1",
           "node": {"backend": "simulated", "simulator": {"gpu_model": "MI300X", "gpus": 1,
                                                          "startup_time_s": STARTUP_S}},
           "models": [{"name": "lazy", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN_05B,
                       "max_model_len": 2048, "max_num_seqs": 4,
                       "env": {"GPU_SHARING_FAKE_DELAY_PER_TOKEN_S": "0.05"},
                       "scaling": {"min_replicas": 0, "max_replicas": 2, "idle_unload_s": 3,
                                   "target_queue_per_replica": 1, "scale_up_after_s": 0.5,
                                   "scale_down_after_s": 2, "queue_limit": 8, "queue_timeout_s": 30}}],
           "vllm": {"port_range": [port_base, port_base + 49], "stop_grace_s": 3, "startup_timeout_s": 20,
                    "health_interval_s": 0.1},
           "api": {"port": api}, "reconcile": {"interval_s": 3600}, "on_exit": "stop"}
    path = tmp_path / "gs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "GPU_SHARING_SIM_STATE": str(tmp_path / "sim")}
    proc = cli_process.start(["run", "--simulate", "-c", str(path)], tmp_path, env=env, new_session=False,
                             log=Path(os.environ.get("DEMAND_TEST_LOG", tmp_path / "daemon.log")))
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{api}/status")["last_reconcile_ok"] is not None, 30, "daemon up")
        yield api, tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def fake_start_s() -> float:
    """What starting the fake vLLM costs on this machine now: its interpreter and imports, plus STARTUP_S."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import simulator.vllm_server"], check=True)
    return time.monotonic() - t0 + STARTUP_S


def test_load_on_first_request_unload_when_idle_scale_with_the_burst(daemon):
    api, _ = daemon
    assert lazy_instances(api) == []
    start_s = fake_start_s()
    code, _, took = chat(api)
    print(f"[demand] first request answered in {took:.2f} s; the fake's start-up here: {start_s:.2f} s")
    assert code == 200 and took <= start_s + 1.0
    assert events(api, "scale-cold-start")
    assert [i["state"] for i in lazy_instances(api)] == ["READY"]

    wait_for(lambda: lazy_instances(api) == [], 20, "idle unload")
    assert events(api, "scale-idle-unload")
    snap = get_json(f"http://127.0.0.1:{api}/status")
    assert all(p["vram_used_bytes"] == 0 for g in snap["gpus"] for p in g["partitions"])

    pause = threading.Event()
    with ThreadPoolExecutor(6) as pool:  # a burst of slow streamed requests (100 tokens x 0.05 s = 5 s each)
        futures = [pool.submit(chat, api, 100, stream=True) for _ in range(6)]
        seen = []

        def two_ready():
            states = sorted(i["state"] for i in lazy_instances(api))
            seen.append(states)
            return states == ["READY", "READY"]
        try:
            wait_for(two_ready, 30, "scale up to max")
        finally:
            print("[demand] states seen:", [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]])
        results = [f.result() for f in futures]
    assert all(code == 200 for code, _, _ in results)
    assert events(api, "scale-scale-up")
    pause.wait(0.1)
    wait_for(lambda: len(lazy_instances(api)) <= 1, 30, "scale down after the quiet")
    assert events(api, "scale-scale-down") or events(api, "scale-idle-unload")


def test_beyond_the_queue_limit_503_with_retry_after(daemon):
    api, _ = daemon
    with ThreadPoolExecutor(12) as pool:
        results = [f.result() for f in [pool.submit(chat, api) for _ in range(12)]]
    refused = [(c, h) for c, h, _ in results if c == 503]
    assert len(refused) >= 12 - 8 and all(int(h["Retry-After"]) >= 1 for _, h in refused)
    assert all(c in (200, 503) for c, _, _ in results)
