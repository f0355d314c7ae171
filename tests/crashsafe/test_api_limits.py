"""API limits: a connection cap (refused connections closed at once), a body read timeout (408, memory
released), deeply nested JSON -> 400 not 500, metric labels bounded to served names, the fd limit raised at start,
and a busy API port -> exit 1 with a message, no traceback."""

from __future__ import annotations

import asyncio
import resource
import socket

import cli_process
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.http_api import make_app
from gpu_sharing.daemon.limits import body_timeout_middleware, limit_connections, raise_fd_limit
from gpu_sharing.daemon.router import UNKNOWN_MODEL_LABEL, Router
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import NodeSnapshot
from simulator.node import SimNode


@pytest.fixture
async def api():
    counters = DaemonMetrics(CollectorRegistry(), process_collector=False)
    router = Router(lambda: NodeSnapshot(), counters)
    await router.start()

    async def reload():
        return {"ok": True}
    app = make_app(ApiSettings(), status=lambda: {}, registry=CollectorRegistry(), router=router, reload=reload,
                   token=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, counters
    await router.close()


async def test_deep_json_is_400_not_500(api):
    client, _ = api
    r = await client.post("/v1/chat/completions", data=b"[" * 100_000 + b"]" * 100_000,
                          headers={"Content-Type": "application/json"})
    assert r.status == 400 and "Traceback" not in await r.text()


async def test_unknown_model_names_share_one_metric_label(api):
    client, counters = api
    for i in range(50):
        r = await client.post("/v1/chat/completions", json={"model": f"nope-{i}", "messages": []})
        assert r.status == 404
    samples = [s for m in counters.registry.collect() if m.name == "gpu_sharing_router_requests"
               for s in m.samples if s.name.endswith("_total")]
    assert [(s.labels["model"], s.labels["code"], s.value) for s in samples] == [(UNKNOWN_MODEL_LABEL, "404", 50)]


async def test_connections_over_the_cap_are_closed_at_once():
    async def ok(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    limit_connections(runner.server, 5)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    loop = asyncio.get_running_loop()
    socks = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        await asyncio.sleep(0)  # let the loop accept them (no timing assumption: polled below with a bound)
        for _ in range(200):
            if len(runner.server.connections) >= 5:
                break
            await asyncio.sleep(0.01)
        closed = 0
        for s in socks:
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1), 0.5)
                closed += data == b""
            except asyncio.TimeoutError:
                pass  # still open, waiting for a request
            except ConnectionResetError:
                closed += 1
        assert len(runner.server.connections) <= 5 and closed >= 7
    finally:
        for s in socks:
            s.close()
        await runner.cleanup()


async def test_unfinished_body_gets_408():
    async def echo(request):
        return web.Response(text=str(len(await request.read())))
    app = web.Application(middlewares=[body_timeout_middleware(0.3)])
    app.router.add_post("/", echo)
    async with TestServer(app, host="127.0.0.1") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    assert b" 408 " in status


def test_fd_soft_limit_is_raised_toward_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_fd_limit(target=min(hard, 4096))
        assert got == min(hard, 4096) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_busy_api_port_is_a_clear_exit_1(tmp_path):
    sim = tmp_path / "sim"
    SimNode.create(sim, "MI300X", 1, reload_time_s=0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: v1\nmodels: []\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli_process.run(["run", "--simulate", "--sim-state", str(sim), "-c", str(cfg), "--api-port", str(port)],
                            tmp_path, timeout=60)
    assert r.poll() == 1 and f"127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
