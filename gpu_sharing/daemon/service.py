"""The long-running daemon: reconcile on a schedule and on events, supervise, reload, serve the API.

Threading model: the event loop serves HTTP and never blocks; every call into the
Reconciler (reconcile passes, supervision ticks, adoption, stop) runs on ONE worker
thread, so they never overlap. APScheduler (AsyncIOScheduler) drives the periodic
jobs; SIGHUP, the config-file watch and POST /admin/reload all go through reload().
A bad config is rejected (log line with the key path, reload error metric) and the
running config stays untouched.

The daemon talks to the Reconciler only through its public API (``reconcile_once``,
``tick``, ``update_config``, ``hold``/``release``, ``stop_instances``, ``adopt``,
``stop_all``, ``detach``); the status snapshot and the VRAM policy live in
``status.py`` and ``vram_policy.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from aiohttp import web
from prometheus_client import CollectorRegistry

from gpu_sharing.config.intake import SettleWatch
from gpu_sharing.config.loader import MAX_CONFIG_BYTES, load_config, resolve_relative
from gpu_sharing.config.schema import Config, OnExit
from gpu_sharing.daemon import ops_api
from gpu_sharing.daemon.api_settings import exposure_warning, needs_restart
from gpu_sharing.daemon.demand import DemandTracker
from gpu_sharing.daemon.event_log import EventLog
from gpu_sharing.daemon.http_api import make_app, make_authorizer, read_token
from gpu_sharing.daemon.limits import HEADER_TIMEOUT_S, limit_connections, max_connections_for, raise_fd_limit
from gpu_sharing.daemon.liveness import WorkerLiveness
from gpu_sharing.daemon.router import Router
from gpu_sharing.daemon.scaling import DemandScaler
from gpu_sharing.daemon.sd_notify import Notifier
from gpu_sharing.daemon.status import build_snapshot, status_json
from gpu_sharing.daemon.vram_policy import run_vram_check
from gpu_sharing.errors import ConfigError, GpuSharingError, OperationError
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.metrics.collector import DaemonCollector
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import NodeSnapshot
from gpu_sharing.reconcile import operations
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime import logs as instance_logs
from gpu_sharing.runtime.controller_lock import DAEMON_ROLE, ControllerLock
from gpu_sharing.runtime.events import Event, EventKind, EventStream

log = logging.getLogger("gpu_sharing.daemon")
AUTOSCALE_INTERVAL_S = 0.25
DRAIN_POLL_S = 0.02


def file_signature(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:  # bounded like the loader: a huge file only has to differ to be refused
            return hashlib.sha256(f.read(MAX_CONFIG_BYTES + 1)).hexdigest()
    except OSError:
        return "missing"


class Daemon:
    def __init__(self, config_path: str, reconciler: Reconciler, *, notifier: Notifier | None = None,
                 tick_interval_s: float = 1.0, watch_interval_s: float = 1.0, json_logs: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.config_path = config_path
        self.reconciler = reconciler
        self.notifier = notifier or Notifier()
        self.tick_interval_s = tick_interval_s
        self.watch_interval_s = watch_interval_s
        self.registry = CollectorRegistry()
        self.metrics = DaemonMetrics(self.registry)
        self.registry.register(DaemonCollector(self.snapshot))
        self.stream = EventStream()
        self.event_log = EventLog(self.stream, self.metrics, json_lines=json_logs)
        reconciler.attach_events(self.stream)
        reconciler.enable_rolling(self.drain)
        self._draining: frozenset[str] = frozenset()
        self.generation = 1
        self._snapshot = NodeSnapshot()
        self._inventory: Inventory | None = None
        self._last_reconcile_at: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self._stop = asyncio.Event()
        self._reconcile_pending = False
        self.clock = clock
        self.liveness = WorkerLiveness(clock)
        inner = reconciler.progress  # every progress line of a long step (driver reload) is a beat too

        def progress(msg: str) -> None:
            reload_step = msg.startswith(("reloading the amdgpu driver", "driver reload:"))
            self.liveness.beat(self.config.node.driver_reload_timeout_s + 60 if reload_step else None)
            if inner:
                inner(msg)
        reconciler.progress = progress
        self._signatures = self._watched_signatures()
        self._settle = SettleWatch(self._signatures, self.config.reconcile.config_settle_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconcile_again = False
        self._tick_pending = False
        self.demand = DemandTracker(registry=self.registry, on_hold=self._on_hold,
                                    default_retry_after_s=self.config.api.retry_after_s)
        self.scaler = DemandScaler(self.demand, clock=time.monotonic)
        self.scaler.step(self.reconciler, self.event)  # start targets before the first pass
        self.router = Router(self.snapshot, self.metrics, retry_after_s=self.config.api.retry_after_s,
                             demand=self.demand)
        self.site: web.TCPSite | None = None
        self._token: str | None = None
        self.bound_port: int | None = None

    @property
    def config(self) -> Config:
        """The config in force (the Reconciler's: deduped, simulated command under --simulate)."""
        return self.reconciler.config

    # ------------------------------------------------------------------ helpers
    def event(self, kind: EventKind, message: str, **fields) -> None:
        """Emit one typed event (log line, /status, counters: see event_log.py)."""
        self.stream.emit(Event(kind, message, **fields))

    @property
    def events(self) -> list[dict]:
        """The recent events, oldest first (what GET /status shows)."""
        return self.event_log.recent()

    def _watched_signatures(self) -> tuple[str, str]:
        catalog = None
        if self.config.sizing.catalog:
            catalog = str(resolve_relative(self.config_path, self.config.sizing.catalog))
        return file_signature(self.config_path), file_signature(catalog)

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> NodeSnapshot:
        return self._snapshot

    def _refresh_snapshot(self) -> None:
        """Runs on the worker thread: statuses + (cached) inventory -> a new frozen snapshot."""
        self._snapshot = build_snapshot(self.reconciler, self._inventory, generation=self.generation,
                                        last_reconcile_at=self._last_reconcile_at, events=self.event_log.recent(50),
                                        draining=self._draining)
        if self._loop is not None and self.demand.any_held():  # held requests look for a READY replica again
            self._loop.call_soon_threadsafe(self.demand.notify)

    def status_json(self) -> dict[str, Any]:
        return status_json(self._snapshot, self.reconciler, self.config_path)

    # ------------------------------------------------------------------ passes (worker thread; public for tests)
    def reconcile_pass(self) -> None:
        """One reconcile pass, then a fresh inventory and snapshot. Blocking: call from the worker thread."""
        t0 = time.monotonic()
        report = self.reconciler.reconcile_once()
        self.metrics.reconcile_duration.observe(time.monotonic() - t0)
        try:
            self._inventory = self.reconciler.backend.inventory()
        except GpuSharingError as e:  # a failed observation must not kill the loop
            self.event(EventKind.ERROR, f"inventory: {e}")
        self._last_reconcile_at = time.time()
        for err in report.errors:
            self.event(EventKind.ERROR, f"reconcile: {err}")
        self._draining = frozenset()
        self._refresh_snapshot()
        self.liveness.beat()

    def vram_pass(self) -> None:
        inventory = self.reconciler.backend.inventory()
        self._inventory = inventory
        run_vram_check(self.reconciler, inventory, self.metrics, self.stream.emit, self.reconcile_pass)
        self._refresh_snapshot()

    def drain(self, instance_ids: Sequence[str]) -> None:
        """Before a stop (worker thread): the router stops sending to these instances, then we wait (at most
        vllm.stop_grace_s) for their in-flight requests to finish. Clients never see the stop."""
        self._draining = frozenset(instance_ids)
        self._refresh_snapshot()
        deadline = time.monotonic() + min(self.config.vllm.stop_grace_s, 60.0)
        pause = threading.Event()
        while any(self.router.outstanding.get(i, 0) for i in instance_ids) and time.monotonic() < deadline:
            pause.wait(DRAIN_POLL_S)

    def tick_pass(self) -> None:
        self.reconciler.tick()
        if self.reconciler.rolling_due():  # the replacement is READY: next replica now, not at the next interval
            self.reconcile_pass()
        for err in self.reconciler.recorder.errors:
            self.event(EventKind.ERROR, f"measured size: {err}")
        self.reconciler.recorder.errors.clear()
        self._refresh_snapshot()
        self.liveness.beat()

    # ------------------------------------------------------------------ async API
    async def reconcile(self) -> None:
        if self._reconcile_pending:
            self._reconcile_again = True  # asked during a pass: one more pass after it (new targets, reload)
            return
        self._reconcile_pending = True
        try:
            while True:
                self._reconcile_again = False
                await self._in_worker(self.reconcile_pass)
                if not self._reconcile_again:
                    break
        finally:
            self._reconcile_pending = False

    async def autoscale(self) -> None:
        """Demand -> replica targets; a changed target reconciles at once. While requests are held, also
        tick (supervision) so that a replica's READY reaches them without waiting for the next tick.
        The passes run as tasks, so this job never overlaps itself."""
        if self.scaler.step(self.reconciler, self.event):
            asyncio.ensure_future(self.reconcile())
        if self.demand.any_held() and not self._tick_pending:
            asyncio.ensure_future(self.tick())

    def _on_hold(self, model: str) -> None:
        if self._loop is not None:
            self._loop.create_task(self.autoscale())

    async def vram_check(self) -> None:
        try:
            await self._in_worker(self.vram_pass)
        except GpuSharingError as e:  # a failed observation must not stop the daemon
            self.event(EventKind.ERROR, f"vram check: {e}")

    async def tick(self) -> None:
        self._tick_pending = True
        try:
            await self._in_worker(self.tick_pass)
        finally:
            self._tick_pending = False

    async def reload(self, reason: str = "reload") -> dict:
        self.notifier.reloading()
        try:
            try:
                new = load_config(self.config_path)
            except GpuSharingError as e:
                self.metrics.config_reload.labels(result="error").inc()
                key = e.problems[0][0] if isinstance(e, ConfigError) and e.problems else ""
                self.event(EventKind.RELOAD_REJECTED, f"{reason}: config rejected, still running generation "
                                                      f"{self.generation}: {e}", key_path=key)
                return {"ok": False, "error": str(e), "generation": self.generation}
            self._reload_api_settings(self.config, new)
            diff = await self._in_worker(self.reconciler.update_config, new)
            self.generation += 1
            self._signatures = self._watched_signatures()
            self.metrics.config_reload.labels(result="ok").inc()
            self.event(EventKind.RELOAD, f"{reason}: generation {self.generation}: added {list(diff.added)}, changed "
                                         f"{list(diff.changed)}, removed {list(diff.removed)}")
            await self.reconcile()
            return {"ok": True, "generation": self.generation, "added": list(diff.added),
                    "changed": list(diff.changed), "removed": list(diff.removed)}
        finally:
            self.notifier.ready()

    async def operate(self, action: str, target: str) -> dict:
        """POST /admin/restart|hold|release: run the operation on the worker thread, then reconcile."""
        fn = {"restart": operations.restart, "hold": operations.hold, "release": operations.release}[action]
        result = await self._in_worker(fn, self.reconciler, target)
        await self.reconcile()
        return {"ok": True, **result.as_dict()}

    def log_path(self, instance_id: str) -> Path | None:
        if instance_id not in {ln.instance_id for ln in self.reconciler.supervisor.launches()}:
            return None
        return instance_logs.log_path(self.reconciler.supervisor.log_dir, instance_id)
    def _reload_api_settings(self, old: Config, new: Config) -> None:
        """Re-read the token now; report settings that need a restart (daemon/api_settings.py)."""
        try:
            self._token = read_token(new.api.token_file)
        except GpuSharingError as e:
            self.event(EventKind.RELOAD_REJECTED, f"{e}; keeping the previous token")
        restart = needs_restart(old, new)
        if restart:
            self.event(EventKind.RELOAD_WARNING, f"{', '.join(restart)} changed: takes effect after a daemon restart")
        warning = exposure_warning(new, self._token)
        if warning:
            self.event(EventKind.SECURITY_WARNING, warning)

    async def watch(self) -> None:
        """Reload once the config (and catalog) content changed and then stayed the same for config_settle_s."""
        self._settle.applied = self._signatures  # a reload by SIGHUP or the API moved it
        self._settle.settle_s = self.config.reconcile.config_settle_s
        signature = self._watched_signatures()
        if self._settle.ready(signature, self.clock()):
            self._settle.accept(signature)
            self._signatures = signature
            await self.reload("config file changed")

    def watchdog(self) -> bool:
        """Ping systemd's watchdog only while the worker completes steps (a stuck worker gets us restarted)."""
        if self.liveness.alive:
            return self.notifier.watchdog()
        self.notifier.status(self.liveness.health()["error"])
        return False

    def request_stop(self) -> None:
        self._stop.set()

    def _schedule_jobs(self, loop: asyncio.AbstractEventLoop) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(event_loop=loop)
        every = {"reconcile": (self.reconcile, self.config.reconcile.interval_s),
                 "tick": (self.tick, self.tick_interval_s), "watch": (self.watch, self.watch_interval_s),
                 "vram": (self.vram_check, self.config.reconcile.vram_check_interval_s),
                 "autoscale": (self.autoscale, AUTOSCALE_INTERVAL_S)}
        for job_id, (fn, seconds) in every.items():
            scheduler.add_job(fn, "interval", seconds=seconds, id=job_id, max_instances=1, coalesce=True)
        wd = Notifier.watchdog_interval_s()
        if wd:
            scheduler.add_job(self.watchdog, "interval", seconds=wd, id="watchdog")
        scheduler.start()
        return scheduler

    async def run(self) -> int:
        lock = ControllerLock(self.reconciler.state_dir, DAEMON_ROLE).acquire(
            hint="one daemon per state dir: stop that one first, or give this one another --state-dir")
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig, fn in ((signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP"))),
                        (signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop)):
            loop.add_signal_handler(sig, fn)
        await self.router.start()
        api = self.config.api
        self._token = read_token(api.token_file)
        warning = exposure_warning(self.config, self._token)
        if warning:
            self.event(EventKind.SECURITY_WARNING, warning)
        app = make_app(api, status=self.status_json, registry=self.registry if self.config.metrics.enabled else None,
                       router=self.router, reload=lambda: self.reload("POST /admin/reload"),
                       token=lambda: self._token, health=self.liveness.health)
        ops_api.add_routes(app, authorized=make_authorizer(api, lambda: self._token), operate=self.operate,
                           log_path=self.log_path)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=HEADER_TIMEOUT_S)
        await runner.setup()
        limit_connections(runner.server, max_connections_for(raise_fd_limit()))
        self.site = web.TCPSite(runner, api.host, api.port)
        try:
            await self.site.start()
        except OSError as e:  # a busy port is an operator problem, not a traceback
            await runner.cleanup()
            await self.router.close()
            raise OperationError(f"cannot listen on {api.host}:{api.port} for the API: {e.strerror or e} "
                                 "(another process uses the port? set api.port or --api-port)") from None
        self.bound_port = self.site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - port 0 = ephemeral
        self.event(EventKind.DAEMON, f"start: API on http://{api.host}:{self.bound_port}")
        adopted = await self._in_worker(self.reconciler.adopt)
        if adopted:
            self.event(EventKind.DAEMON, f"adopted {len(adopted)} running instances: {', '.join(adopted)}")
        await self.reconcile()
        self.notifier.ready(f"serving {len(self._snapshot.instances)} instances")
        scheduler = self._schedule_jobs(loop)
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            scheduler.shutdown(wait=False)
            if self.config.on_exit == OnExit.STOP:
                self.event(EventKind.DAEMON, "stop: stopping all instances (on_exit: stop)")
                await self._in_worker(self.reconciler.stop_all, self.config.vllm.stop_grace_s + 5)
            else:
                self.event(EventKind.DAEMON, "stop: leaving instances running for the next daemon (on_exit: keep)")
                await self._in_worker(self.reconciler.detach)
            await self.router.close()
            await runner.cleanup()
            self._executor.shutdown(wait=True)
        return 0


__all__ = ["Daemon"]
