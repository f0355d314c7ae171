"""The fake vLLM server behaves like vLLM 0.33 (real processes on loopback, bounded waits)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from simulator.node import SimNode
from simulator.vllm_memory import CONTEXT_BYTES, format_gib

GIB = 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(state, *args, env=None, hip="0"):
    e = {**os.environ, "GPU_SHARING_SIM_STATE": str(state), "GPU_SHARING_FAKE_STARTUP_S": "0.3", "HIP_VISIBLE_DEVICES": hip,
         **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "simulator.vllm_server", "serve", *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_health(port: int, proc, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("fake vLLM never became healthy")


def post(port: int, path: str, body: dict):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def node(tmp_path):
    return SimNode.create(tmp_path, "MI300X", 1, compute_mode="CPX")


def test_serves_like_vllm_and_releases_vram_on_sigterm(node, tmp_path):
    port = free_port()
    p = start(tmp_path, "org/m", "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "a", "b",
              "--gpu-memory-utilization", "0.5", "--max-model-len", "2048")
    try:
        wait_health(port, p)
        assert node.partition_info(0)["vram_used_bytes"] == 12 * GIB + CONTEXT_BYTES  # the share + its HIP context
        code, body = post(port, "/v1/chat/completions", {"model": "b", "messages": [{"role": "user", "content": "hi"}]})
        data = json.loads(body)
        assert code == 200 and data["model"] == "a" and data["object"] == "chat.completion"
        code, body = post(port, "/v1/completions", {"model": "a", "prompt": "x y", "max_tokens": 3, "stream": True})
        frames = [f for f in body.split("\n\n") if f]
        assert code == 200 and frames[-1] == "data: [DONE]" and len(frames) == 4
        code, body = post(port, "/v1/chat/completions", {"model": "zz", "messages": []})
        assert code == 404 and json.loads(body)["error"]["type"] == "NotFoundError"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            models = json.loads(r.read())
        assert [c["id"] for c in models["data"]] == ["a", "b"] and models["data"][0]["max_model_len"] == 2048
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                     "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket"):
            assert name in text
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    assert node.partition_info(0)["vram_used_bytes"] == 0


def test_out_of_memory_exits_1_with_vllm_text(node, tmp_path):
    node.claim_memory(0, 999999, "other", 20 * GIB, synthetic=True)
    p = start(tmp_path, "org/m", "--port", str(free_port()))
    out, err = p.communicate(timeout=15)
    assert p.returncode == 1
    seen = format_gib(4 * GIB - CONTEXT_BYTES)  # what vLLM's own HIP context leaves of the 4 GiB free
    assert f"Free memory on device cuda:0 ({seen}/24.0 GiB) on startup is less than desired GPU memory utilization " \
           "(0.92, 22.08 GiB)" in out


def test_inconsistent_visibility_and_bad_cu_mask_fail(node, tmp_path):
    p = start(tmp_path, "org/m", env={"CUDA_VISIBLE_DEVICES": "1"})
    _, err = p.communicate(timeout=15)
    assert p.returncode == 1 and "Inconsistent GPU visibility env vars" in err
    p = start(tmp_path, "org/m", env={"HSA_CU_MASK": "0:0x0"})
    _, err = p.communicate(timeout=15)
    assert p.returncode == 1 and "HSA_CU_MASK" in err


def test_unknown_flag_is_a_usage_error(node, tmp_path):
    p = start(tmp_path, "org/m", "--no-such-flag")
    _, err = p.communicate(timeout=15)
    assert p.returncode == 2 and "unrecognized arguments: --no-such-flag" in err


def test_crash_after_requests(node, tmp_path):
    port = free_port()
    p = start(tmp_path, "org/m", "--port", str(port), "--gpu-memory-utilization", "0.3",
              env={"GPU_SHARING_FAKE_CRASH_AFTER_REQUESTS": "2"})
    wait_health(port, p)
    post(port, "/v1/completions", {"prompt": "a"})
    try:
        post(port, "/v1/completions", {"prompt": "a"})
    except OSError:
        pass
    assert p.wait(timeout=10) == 1
    assert node.partition_info(0)["vram_used_bytes"] == 0  # the node reaps a dead pid's VRAM
