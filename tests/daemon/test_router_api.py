"""The daemon's HTTP API and router against a real loopback upstream (aiohttp test servers).

404 names the served models; a known-but-not-ready model is 503 with Retry-After;
streaming goes through chunk by chunk (the upstream holds its second chunk until the
client has seen the first); POST /admin/reload needs the bearer token from the token
file; sd_notify datagrams arrive on a bound socket with the fields systemd expects.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.http_api import make_app, read_token
from gpu_sharing.daemon.router import Router
from gpu_sharing.daemon.sd_notify import Notifier
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import InstanceSnapshot, NodeSnapshot


def instance(iid: str, model: str, state: str, url: str) -> InstanceSnapshot:
    return InstanceSnapshot(iid, model, 0, (model,), state, 4242, 0, url, ("0.0",), 0, "", 1 << 30)


class Upstream:
    """A stand-in vLLM on loopback: JSON answers and a two-chunk SSE stream gated by an event."""

    def __init__(self):
        self.release = asyncio.Event()
        self.seen_paths: list[str] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen_paths.append(request.path)
        if not body.get("stream"):
            return web.json_response({"model": body["model"], "choices": [{"message": {"content": "ok"}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"n": 1}\n\n')
        await asyncio.wait_for(self.release.wait(), 5)
        await resp.write(b'data: {"n": 2}\n\ndata: [DONE]\n\n')
        await resp.write_eof()
        return resp


@pytest.fixture
async def setup(tmp_path: Path):
    upstream = Upstream()
    up_app = web.Application()
    up_app.router.add_post("/v1/chat/completions", upstream.chat)
    up_server = TestServer(up_app, host="127.0.0.1")
    await up_server.start_server()
    url = str(up_server.make_url("")).rstrip("/")
    snap = NodeSnapshot(instances=(instance("alpha-0", "alpha", "READY", url),
                                   instance("beta-0", "beta", "STARTING", "http://127.0.0.1:1")))
    counters = DaemonMetrics(CollectorRegistry(), process_collector=False)
    router = Router(lambda: snap, counters, retry_after_s=7)
    await router.start()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    reloads: list[int] = []

    async def reload() -> dict:
        reloads.append(1)
        return {"ok": True, "generation": 2}

    app = make_app(ApiSettings(), status=lambda: {"instances": []}, registry=CollectorRegistry(), router=router,
                   reload=reload, token=read_token(str(token_file)))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, upstream, counters, reloads
    await client.close()
    await router.close()
    await up_server.close()


def requests(metrics: DaemonMetrics, model: str, code: str) -> float | None:
    return metrics.registry.get_sample_value("gpu_sharing_router_requests_total", {"model": model, "code": code})


def chat_body(model: str, stream: bool = False) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_unknown_model_404_lists_names(setup):
    client, _, counters, _ = setup
    r = await client.post("/v1/chat/completions", json=chat_body("gamma"))
    assert r.status == 404
    msg = (await r.json())["error"]["message"]
    assert "gamma" in msg and "alpha" in msg and "beta" in msg
    assert requests(counters, "__unknown__", "404") == 1  # unknown names share one series


async def test_known_not_ready_503_retry_after(setup):
    client, _, counters, _ = setup
    r = await client.post("/v1/chat/completions", json=chat_body("beta"))
    assert r.status == 503
    assert r.headers["Retry-After"] == "7"
    assert "STARTING" in (await r.json())["error"]["message"]
    assert requests(counters, "beta", "503") == 1


async def test_ready_model_forwarded(setup):
    client, upstream, counters, _ = setup
    r = await client.post("/v1/chat/completions", json=chat_body("alpha"))
    assert r.status == 200 and (await r.json())["model"] == "alpha"
    assert upstream.seen_paths == ["/v1/chat/completions"]
    assert requests(counters, "alpha", "200") == 1
    models = await (await client.get("/v1/models")).json()
    assert {m["id"]: m["ready"] for m in models["data"]} == {"alpha": True, "beta": False}


async def test_streaming_passes_chunk_by_chunk(setup):
    client, upstream, _, _ = setup
    r = await client.post("/v1/chat/completions", json=chat_body("alpha", stream=True))
    assert r.status == 200
    got = b""
    while b"\n\n" not in got:  # the first event arrives while upstream still holds the second
        got += await asyncio.wait_for(r.content.readany(), 5)
    assert b'"n": 1' in got and b'"n": 2' not in got
    upstream.release.set()
    rest = await asyncio.wait_for(r.read(), 5)
    assert b'"n": 2' in rest and b"[DONE]" in rest


async def test_admin_reload_needs_token(setup):
    client, _, _, reloads = setup
    assert (await client.post("/admin/reload")).status == 401
    assert (await client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})).status == 401
    assert reloads == []
    r = await client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200 and (await r.json())["generation"] == 2
    assert reloads == [1]


def test_sd_notify_datagrams(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        n = Notifier(str(path))
        assert n.ready("serving 3 instances")
        assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving 3 instances"]
        assert n.reloading()
        fields = dict(f.split("=", 1) for f in sock.recv(4096).decode().split("\n"))
        assert fields["RELOADING"] == "1"
        import time
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now_us - int(fields["MONOTONIC_USEC"]) < 5_000_000
        assert n.stopping() and sock.recv(4096) == b"STOPPING=1"
        assert n.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()
    assert not Notifier("").ready()  # no NOTIFY_SOCKET: a no-op, not an error


def test_watchdog_interval_only_for_this_pid(monkeypatch):
    import os
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.watchdog_interval_s() is None


def test_empty_token_file_rejected(tmp_path: Path):
    (tmp_path / "t").write_text("  \n")
    from gpu_sharing.errors import UserError
    with pytest.raises(UserError, match="empty"):  # a clear exit 2 naming api.token_file, not a traceback
        read_token(str(tmp_path / "t"))


