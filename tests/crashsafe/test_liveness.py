"""A stuck worker is visible: /healthz turns 503 and the systemd watchdog is no longer pinged once the worker
has completed nothing for the bound, while the event loop itself is fine."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gpu_sharing.config.loader import load_config
from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.http_api import make_app
from gpu_sharing.daemon.liveness import WorkerLiveness
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.hardware.modes import ComputePartitionMode as C

from reconcile_fakes import RecordingBackend
from test_reconciler import new_reconciler


class Pings:
    def __init__(self):
        self.sent = []

    def watchdog(self):
        self.sent.append("WATCHDOG=1")
        return True

    def status(self, text):
        self.sent.append(f"STATUS={text}")
        return True


def test_watchdog_follows_the_worker_not_the_loop(tmp_path):
    path = tmp_path / "gs.yaml"
    path.write_text("version: v1\nmodels: []\n")
    now = [0.0]
    rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}), cfg=load_config(path))
    daemon = Daemon(str(path), rec, clock=lambda: now[0])
    pings = Pings()
    daemon.notifier = pings
    try:
        daemon.tick_pass()
        now[0] = 100.0
        assert daemon.watchdog() and daemon.liveness.health()["ok"]
        now[0] = 100.0 + daemon.liveness.bound_s + 1  # the worker hangs: no step completes
        assert not daemon.watchdog() and not daemon.liveness.health()["ok"]
        assert pings.sent[-1].startswith("STATUS=the reconcile worker has completed nothing")
        daemon.tick_pass()  # it recovers
        assert daemon.watchdog() and pings.sent[-1] == "WATCHDOG=1"
        rec.progress("repartitioning GPU 0: CPX+NPS1")  # progress of a long step is a beat
        now[0] += daemon.liveness.bound_s
        assert daemon.liveness.alive
        now[0] += 2
        assert not daemon.liveness.alive
        rec.progress("driver reload: running modprobe -r amdgpu (0%)")  # one modprobe may run this long, silent
        now[0] += rec.config.node.driver_reload_timeout_s + 30
        assert daemon.liveness.alive and daemon.watchdog()
        daemon.tick_pass()  # the reload is over: the normal bound again
        now[0] += daemon.liveness.bound_s + 1
        assert not daemon.liveness.alive
    finally:
        daemon._executor.shutdown(wait=True)  # noqa: SLF001


async def test_healthz_is_503_when_the_worker_is_stuck():
    now = [0.0]
    live = WorkerLiveness(lambda: now[0], bound_s=30)
    from gpu_sharing.daemon.router import Router
    from gpu_sharing.metrics.instruments import DaemonMetrics
    from gpu_sharing.metrics.snapshot import NodeSnapshot
    router = Router(lambda: NodeSnapshot(), DaemonMetrics(CollectorRegistry(), process_collector=False))

    async def reload():
        return {"ok": True}
    app = make_app(ApiSettings(), status=lambda: {}, registry=CollectorRegistry(), router=router, reload=reload,
                   token=None, health=live.health)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/healthz")).status == 200
        now[0] = 31.0
        resp = await client.get("/healthz")
        assert resp.status == 503 and "completed nothing" in (await resp.json())["error"]
    await router.close()
