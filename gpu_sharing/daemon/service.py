"""The long-running daemon: reconcile on a schedule and on events, supervise, reload, serve the API.

Threading model: the event loop serves HTTP and never blocks; every call into the
Reconciler (reconcile passes, supervision ticks, adoption, stop) runs on ONE worker
thread, so they never overlap. APScheduler (AsyncIOScheduler) drives the periodic
jobs; SIGHUP, the config-file watch and POST /admin/reload all go through reload().
A bad config is rejected (log line with the key path, reload error metric) and the
running config stays untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from aiohttp import web
from prometheus_client import CollectorRegistry

from gpu_sharing.config.loader import load_config, resolve_relative
from gpu_sharing.config.schema import Config, OnExit
from gpu_sharing.daemon.http_api import make_app, read_token
from gpu_sharing.daemon.router import Router
from gpu_sharing.daemon.schedule import active_models
from gpu_sharing.daemon.sd_notify import Notifier
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.metrics.collector import DaemonCollector
from gpu_sharing.metrics.snapshot import (DaemonCounters, GpuSnapshot, InstanceSnapshot, NodeSnapshot,
                                          PartitionSnapshot)
from gpu_sharing.reconcile.reconciler import Reconciler

log = logging.getLogger("gpu_sharing.daemon")
MAX_EVENTS = 200


def file_signature(path: str | None) -> str:
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


class Daemon:
    def __init__(self, config: Config, config_path: str, reconciler: Reconciler, *, notifier: Notifier | None = None,
                 tick_interval_s: float = 1.0, watch_interval_s: float = 1.0):
        self.config = config
        self.config_path = config_path
        self.reconciler = reconciler
        self.notifier = notifier or Notifier()
        self.tick_interval_s = tick_interval_s
        self.watch_interval_s = watch_interval_s
        self.counters = DaemonCounters()
        self.registry = CollectorRegistry()
        self.registry.register(DaemonCollector(self.snapshot, self.counters))
        self.generation = 1
        self.events: list[dict] = []
        self._snapshot = NodeSnapshot()
        self._inventory = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self._stop = asyncio.Event()
        self._reconcile_pending = False
        self._signatures = self._watched_signatures()
        self.router = Router(self.snapshot, self.counters, retry_after_s=config.api.retry_after_s)
        self.site: web.TCPSite | None = None
        self.bound_port: int | None = None

    # ------------------------------------------------------------------ helpers
    def event(self, kind: str, message: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "message": message})
        del self.events[:-MAX_EVENTS]
        (log.warning if kind.endswith("error") else log.info)("%s: %s", kind, message)

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
        inv = self._inventory
        vram_by_pid = {p.pid: p.vram_bytes for g in (inv.gpus if inv else ()) for part in g.partitions for p in part.processes}
        gpus = tuple(GpuSnapshot(g.index, g.model, g.compute_mode.value, g.memory_mode.value, tuple(
            PartitionSnapshot(p.gpu, p.index, p.hip_index, p.cu_count, p.vram_total_bytes, p.vram_used_bytes)
            for p in g.partitions)) for g in (inv.gpus if inv else ()))
        instances = tuple(InstanceSnapshot(
            s.instance_id, s.model, s.replica, tuple(s.served_names), s.state.value, s.pid, s.port, s.url,
            tuple(s.partitions), s.restarts, s.last_error, s.memory_budget_bytes, vram_by_pid.get(s.pid or -1, 0))
            for s in self.reconciler.statuses())
        report = self.reconciler.last_report
        unplaceable = tuple({"model": u.model, "replica": u.replica, "reason": u.reason}
                            for u in (report.unplaceable if report else ()))
        self._snapshot = NodeSnapshot(gpus, instances, unplaceable, self.generation, self._last_reconcile_at,
                                      report.ok if report else None, "; ".join(report.errors) if report else "",
                                      tuple(self.events[-50:]))

    _last_reconcile_at: float | None = None

    def status_json(self) -> dict[str, Any]:
        snap = asdict(self._snapshot)
        plan = self.reconciler.last_plan
        snap["solver"] = asdict(plan.solver) if plan else None
        snap["config_path"] = self.config_path
        return snap

    # ------------------------------------------------------------------ work units (worker thread)
    def _reconcile_sync(self) -> None:
        t0 = time.monotonic()
        windows = active_models(self.config)
        self.reconciler.active = windows
        report = self.reconciler.reconcile_once()
        self.counters.reconcile_durations_s.append(time.monotonic() - t0)
        del self.counters.reconcile_durations_s[:-10_000]
        try:
            self._inventory = self.reconciler.backend.inventory()
        except Exception as e:  # noqa: BLE001 - a failed observation must not kill the loop
            self.event("inventory-error", str(e))
        self._last_reconcile_at = time.time()
        for err in report.errors:
            self.event("reconcile-error", err)
        self._refresh_snapshot()

    def _vram_sync(self) -> None:
        """VRAM monitor: over-budget instances get their memory_policy; foreign processes are reported only."""
        inventory = self.reconciler.backend.inventory()
        self._inventory = inventory
        report = self._vram_watch(inventory).run_once()
        for v in report.violations:
            self.counters.vram_violations[(v.instance_id, v.action.value)] = \
                self.counters.vram_violations.get((v.instance_id, v.action.value), 0) + 1
        self.counters.foreign_processes = len(report.foreign)
        for f in report.foreign:
            self.event("foreign-process", f"pid {f.pid} ({f.name}) on managed partition {f.partition}: reported, not killed")
        self._refresh_snapshot()

    def _vram_watch(self, inventory):
        from gpu_sharing.hardware.inventory import PartitionRef
        from gpu_sharing.isolation import MemoryAction, VramBudget, VramWatch

        models = {m.name: m for m in self.config.models}

        def budgets():
            for s in self.reconciler.statuses():
                m = models.get(s.model)
                if s.state.value in ("STOPPED", "FAILED") or s.pid is None or m is None:
                    continue  # every live instance of ours has a budget, so none of them counts as foreign
                yield VramBudget(s.instance_id, m.limits.memory_bytes or s.memory_budget_bytes, frozenset({s.pid}),
                                 tuple(PartitionRef(*map(int, p.split("."))) for p in s.partitions),
                                 MemoryAction(m.limits.memory_policy.value), m.limits.memory_tolerance_fraction)

        def act(v) -> None:
            self.event("vram-over-budget", v.message)
            if v.action.value in ("restart", "stop"):
                self.reconciler.stop_instances([v.instance_id], self.config.vllm.stop_grace_s + 5)
                if v.action.value == "stop":
                    self.reconciler.held[v.instance_id] = v.message
                self._reconcile_sync()

        return VramWatch(inventory=lambda: inventory, budgets=budgets, act=act)

    def _tick_sync(self) -> None:
        self.reconciler.tick()
        self._refresh_snapshot()

    # ------------------------------------------------------------------ async API
    async def reconcile(self) -> None:
        if self._reconcile_pending:
            return
        self._reconcile_pending = True
        try:
            await self._in_worker(self._reconcile_sync)
        finally:
            self._reconcile_pending = False

    async def vram_check(self) -> None:
        try:
            await self._in_worker(self._vram_sync)
        except Exception as e:  # noqa: BLE001 - a failed observation must not stop the daemon
            self.event("vram-check-error", str(e))

    async def tick(self) -> None:
        await self._in_worker(self._tick_sync)

    async def reload(self, reason: str = "reload") -> dict:
        self.notifier.reloading()
        try:
            try:
                new = load_config(self.config_path)
            except GpuSharingError as e:
                self.counters.reload_total["error"] += 1
                self.event("reload-error", f"{reason}: config rejected, still running generation {self.generation}: {e}")
                return {"ok": False, "error": str(e), "generation": self.generation}
            diff = await self._in_worker(self.reconciler.update_config, new)
            self.config = new
            self.generation += 1
            self._signatures = self._watched_signatures()
            self.counters.reload_total["ok"] += 1
            self.event("reload", f"{reason}: generation {self.generation}: added {list(diff.added)}, changed "
                                 f"{list(diff.changed)}, removed {list(diff.removed)}")
            await self.reconcile()
            return {"ok": True, "generation": self.generation, "added": list(diff.added),
                    "changed": list(diff.changed), "removed": list(diff.removed)}
        finally:
            self.notifier.ready()

    async def watch(self) -> None:
        if self._watched_signatures() != self._signatures:
            self._signatures = self._watched_signatures()
            await self.reload("config file changed")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, fn in ((signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP"))),
                        (signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop)):
            loop.add_signal_handler(sig, fn)
        await self.router.start()
        runner = web.AppRunner(make_app(self.config.api, status=self.status_json, registry=self.registry,
                                        router=self.router, reload=lambda: self.reload("POST /admin/reload"),
                                        token=read_token(self.config.api.token_file)), access_log=None)
        await runner.setup()
        self.site = web.TCPSite(runner, self.config.api.host, self.config.api.port)
        await self.site.start()
        self.bound_port = self.site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - port 0 = ephemeral
        self.event("start", f"API on http://{self.config.api.host}:{self.bound_port}")
        adopted = await self._in_worker(self.reconciler.adopt)
        if adopted:
            self.event("adopt", f"adopted {len(adopted)} running instances: {', '.join(adopted)}")
        await self.reconcile()
        self.notifier.ready(f"serving {len(self._snapshot.instances)} instances")
        scheduler = AsyncIOScheduler(event_loop=loop)
        scheduler.add_job(self.reconcile, "interval", seconds=self.config.reconcile.interval_s, id="reconcile",
                          max_instances=1, coalesce=True)
        scheduler.add_job(self.tick, "interval", seconds=self.tick_interval_s, id="tick", max_instances=1, coalesce=True)
        scheduler.add_job(self.watch, "interval", seconds=self.watch_interval_s, id="watch", max_instances=1, coalesce=True)
        scheduler.add_job(self.vram_check, "interval", seconds=self.config.reconcile.vram_check_interval_s, id="vram",
                          max_instances=1, coalesce=True)
        wd = Notifier.watchdog_interval_s()
        if wd:
            scheduler.add_job(self.notifier.watchdog, "interval", seconds=wd, id="watchdog")
        scheduler.start()
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            scheduler.shutdown(wait=False)
            if self.config.on_exit == OnExit.STOP:
                self.event("stop", "stopping all instances (on_exit: stop)")
                await self._in_worker(self.reconciler.stop_all, self.config.vllm.stop_grace_s + 5)
            else:
                self.event("stop", "leaving instances running for the next daemon (on_exit: keep)")
                await self._in_worker(self.reconciler.detach)
            await self.router.close()
            await runner.cleanup()
            self._executor.shutdown(wait=True)
        return 0


__all__ = ["Daemon"]
