"""Metrics a Prometheus rule can trust (issue 17): 15,000 reconcile passes of the daemon and 10,000 router
requests (1,000 with unknown, all different model names); scraped every 1,000 operations.

Checks: no counter, histogram bucket, _count or _sum ever goes down between scrapes; each histogram's
_count equals the number of operations it measures (reconcile passes; router requests, which also
equals the sum of gpu_sharing_router_requests_total); the number of series does not grow with the
number of distinct unknown names. The reconcile pass is the daemon's real one over a cheap fake
planner (an empty plan) and no state-file fsync, so 15,000 passes take seconds.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.daemon.http_api import make_app
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.metrics.snapshot import InstanceSnapshot, ModelSnapshot, NodeSnapshot
from gpu_sharing.planner.types import Plan, SolverInfo
from gpu_sharing.reconcile import reconciler as reconciler_module
from gpu_sharing.reconcile.reconciler import Reconciler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reconcile"))
from reconcile_fakes import RecordingBackend  # noqa: E402

MONOTONIC = re.compile(r"^(gpu_sharing_\w+(?:_total|_bucket|_count|_sum)|process_cpu_seconds_total)(\{[^}]*\})? (\S+)$")


def empty_plan(inventory, demands, running, policy) -> Plan:
    return Plan(gpus=(), placements=(), to_start=(), to_stop=(), to_repartition=(), unchanged=(), unplaceable=(),
                actions=(), solver=SolverInfo("fake", 0, 0, 0))


def samples(registry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        m = MONOTONIC.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def series_count(registry) -> int:
    return sum(1 for ln in generate_latest(registry).decode().splitlines() if ln and not ln.startswith("#"))


class Scrapes:
    def __init__(self, registry):
        self.registry = registry
        self.last: dict[str, float] = {}
        self.count = 0

    def check(self) -> None:
        now = samples(self.registry)
        went_down = {k: (v, now[k]) for k, v in self.last.items() if k in now and now[k] < v}
        vanished = set(self.last) - set(now)
        assert not went_down and not vanished, (went_down, vanished)
        self.last = now
        self.count += 1


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    monkeypatch.setattr(reconciler_module, "write_state", lambda state_dir, entries: None)
    text = f"version: v1\nnode: {{state_dir: {tmp_path}}}\n"
    (tmp_path / "t.yaml").write_text(text)
    rec = Reconciler(parse_config_text(text, "t.yaml"), RecordingBackend({0: C.SPX}), state_dir=tmp_path / "state",
                     planner=empty_plan)
    return Daemon(str(tmp_path / "t.yaml"), rec)


def test_reconcile_histogram_counts_every_pass(daemon):
    scrapes = Scrapes(daemon.registry)
    for i in range(15_000):
        daemon.reconcile_pass()
        if i % 1_000 == 999:
            scrapes.check()
    reg = daemon.registry
    assert reg.get_sample_value("gpu_sharing_reconcile_duration_seconds_count") == 15_000
    assert reg.get_sample_value("gpu_sharing_reconcile_duration_seconds_bucket", {"le": "+Inf"}) == 15_000
    assert scrapes.count == 15


async def test_router_counts_match_and_series_stay_bounded(daemon):
    upstream = web.Application()

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"object": "chat.completion", "model": "qwen", "choices": []})
    upstream.router.add_post("/v1/chat/completions", chat)
    up = TestServer(upstream, host="127.0.0.1")
    await up.start_server()
    url = str(up.make_url("")).rstrip("/")
    snap = NodeSnapshot(instances=(InstanceSnapshot("qwen-0", "qwen", 0, ("qwen",), "READY", 1, up.port, url, ("0.0",),
                                                    0, "", 1 << 30),
                                   InstanceSnapshot("llama-0", "llama", 0, ("llama",), "STARTING", 2, 1, "http://127.0.0.1:1",
                                                    ("0.1",), 0, "", 1 << 30)),
                        models=(ModelSnapshot("qwen", ("qwen",), "Qwen/Qwen2.5-0.5B-Instruct", 1),
                                ModelSnapshot("llama", ("llama",), "meta-llama/Llama-3.1-8B-Instruct", 1)))
    router = daemon.router
    router.snapshot = lambda: snap
    await router.start()
    client = TestClient(TestServer(make_app(daemon.config.api, status=dict, registry=daemon.registry, router=router,
                                            reload=None, token=None), host="127.0.0.1"))
    await client.start_server()
    scrapes = Scrapes(daemon.registry)
    codes: dict[int, int] = {}
    try:
        async def one(i: int) -> None:
            # 1,000 unknown names (404), 2,000 forwarded to qwen (200), 7,000 to llama, still starting (503)
            model = f"unknown-{i}" if i % 10 == 0 else ("qwen" if i % 10 in (1, 2) else "llama")
            r = await client.post("/v1/chat/completions", json={"model": model, "messages": []})
            await r.read()
            codes[r.status] = codes.get(r.status, 0) + 1
        baseline = None
        for batch in range(10):
            for lane in range(0, 1_000, 25):  # 25 in flight at a time
                await asyncio.gather(*(one(batch * 1_000 + lane + k) for k in range(25)))
            scrapes.check()
            baseline = baseline or series_count(daemon.registry)
            assert series_count(daemon.registry) == baseline  # 100 more unknown names each batch: no new series
    finally:
        await client.close()
        await router.close()
        await up.close()
    assert codes == {200: 2_000, 404: 1_000, 503: 7_000}
    reg = daemon.registry
    req = {(m, c): reg.get_sample_value("gpu_sharing_router_requests_total", {"model": m, "code": c}) or 0
           for m in ("qwen", "llama", "__unknown__") for c in ("200", "404", "503")}
    assert req[("qwen", "200")] == 2_000 and req[("__unknown__", "404")] == 1_000 and req[("llama", "503")] == 7_000
    assert sum(req.values()) == 10_000 == reg.get_sample_value("gpu_sharing_router_request_duration_seconds_count")
