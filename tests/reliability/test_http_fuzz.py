"""HTTP API fuzz: bad JSON, random bodies, huge bodies, odd paths -> 4xx answers, never 5xx, bounded memory."""

from __future__ import annotations

import random

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.http_api import make_app
from gpu_sharing.daemon.router import Router
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import InstanceSnapshot, NodeSnapshot

SNAP = NodeSnapshot(instances=(InstanceSnapshot("m-0", "m", 0, ("m",), "STARTING", 1, 9, "http://127.0.0.1:9",
                                                ("0.0",), 0, "", 1),))


async def reload():
    return {"ok": True}


@pytest.mark.asyncio
async def test_random_requests_get_4xx_never_5xx():
    api = ApiSettings(max_body_bytes=64 * 1024)
    router = Router(lambda: SNAP, DaemonMetrics(CollectorRegistry(), process_collector=False))
    await router.start()
    app = make_app(api, status=lambda: {"ok": True}, registry=CollectorRegistry(), router=router, reload=reload,
                   token="secret")
    rng = random.Random(3)
    bodies = [b"", b"{", b"[]", b"null", b'{"model": 5}', b'{"model": "zz"}', b'{"model": "m"}', b"\xff\xfe",
              b'{"model": "' + b"x" * 5000 + b'"}', b'{"model": {"a": [1, 2]}}']
    try:
        async with TestClient(TestServer(app)) as client:
            for i in range(300):
                path = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/admin/reload",
                                   "/v1/../status", "/%00", "/v1/models"])
                body = rng.choice(bodies) if i % 3 else bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
                r = await client.post(path, data=body, headers={"Content-Type": "application/json"})
                await r.read()
                assert r.status < 500 or (r.status == 503 and r.headers.get("Retry-After")), (path, body[:40], r.status)
            r = await client.post("/v1/chat/completions", data=b"{" + b" " * (200 * 1024) + b"}")
            assert r.status == 413  # bodies over api.max_body_bytes are refused, not buffered
            r = await client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
            assert r.status == 401
    finally:
        await router.close()
