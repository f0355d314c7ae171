"""Supervise vLLM instances: one state machine per instance, advanced by ``tick(now)``.

Why tick-driven (like supervisord's ``transition()``): every decision reads an
injected clock and acts through an injected spawner and health checker, so the
whole lifecycle (start timeout, capped backoff, FAILED after max_restarts within
a window, SIGTERM then SIGKILL after stop_grace_s) is unit-tested in
milliseconds with fake time and fake processes. ``tick`` never blocks: it polls
processes, probes /health with a short timeout, and moves states.

Instances sharing a partition start one at a time (vLLM measures free memory
while it profiles; two profiling at once would each see the other's memory as
used): a STAGING instance spawns only while no partition neighbour is STARTING.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from gpu_sharing.config.schema import VllmSettings
from gpu_sharing.runtime import logs
from gpu_sharing.runtime.events import Event, EventKind, EventSink, no_events
from gpu_sharing.runtime.health import HealthChecker, http_health
from gpu_sharing.runtime.instance_state import InstanceState, backoff_delay_s, check_transition
from gpu_sharing.runtime.spawner import ProcessHandle, SpawnRequest, Spawner, SubprocessSpawner

S = InstanceState
STARTING_PROBE_INTERVAL_S = 0.1
"""How often a STARTING instance's /health is probed (cheap: loopback, refused until up)."""
READY_FAILURES_BEFORE_RESTART = 3
LOG_CHECK_INTERVAL_S = 10.0


@dataclass(frozen=True)
class InstanceLaunch:
    """Everything needed to (re)start one instance and to describe it in status and the state file."""

    instance_id: str
    model: str
    replica: int
    fingerprint: str
    """The demand fingerprint (config-level): a change means restart."""
    served_names: tuple[str, ...]
    partitions: tuple[str, ...]
    """``"gpu.index"`` per tp rank."""
    hip_indices: tuple[int, ...]
    memory_bytes_per_rank: int
    tp: int
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    port: int
    url: str
    preexec_fn: Callable[[], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InstanceStatus:
    instance_id: str
    model: str
    replica: int
    served_names: tuple[str, ...]
    state: InstanceState
    pid: int | None
    port: int
    url: str
    partitions: tuple[str, ...]
    hip_indices: tuple[int, ...]
    restarts: int
    last_error: str
    memory_budget_bytes: int
    started_at: float | None
    """Epoch seconds of the current process's start."""
    ready_at: float | None


@dataclass
class _Record:
    launch: InstanceLaunch
    state: InstanceState = S.PENDING
    handle: ProcessHandle | None = None
    started_at: float | None = None
    start_mono: float = 0.0
    ready_at: float | None = None
    restart_times: list[float] = field(default_factory=list)
    restarts: int = 0
    last_error: str = ""
    backoff_until: float = 0.0
    stop_deadline: float = 0.0
    killed: bool = False
    next_probe: float = 0.0
    health_failures: int = 0
    stop_requested: bool = False
    restart_after_stop: bool = False
    """Operator restart of a live instance: STOPPING -> STOPPED -> STAGING, not counted as a crash."""


class Supervisor:
    """Owns the instance records; all methods are thread-safe (one lock)."""

    def __init__(self, vllm: VllmSettings, *, log_dir: Path, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, spawner: Spawner | None = None,
                 health_checker: HealthChecker | None = None,
                 on_ready: Callable[[InstanceStatus], None] | None = None,
                 stage_gate: Callable[[InstanceLaunch], bool] | None = None, events: EventSink | None = None):
        self.vllm = vllm
        self.events: EventSink = events or no_events
        """Every state change, crash, restart and FAILED goes here (see runtime/events.py)."""
        self.stage_gate = stage_gate
        """STAGING -> STARTING only when this says the instance's weights are on local disk."""
        self.log_dir = Path(log_dir)
        self.clock = clock
        self.wall_clock = wall_clock
        self.spawner = spawner or SubprocessSpawner()
        self.health = health_checker or http_health
        self.on_ready = on_ready
        self._records: dict[str, _Record] = {}
        self._lock = threading.RLock()
        self._next_log_check = 0.0
        self.version = 0
        """Bumped on every state or pid change, so callers know when to rewrite the state file."""
        self.port_check: Callable[[InstanceLaunch], InstanceLaunch] | None = None
        """Before each spawn: the launch to use (a new port when the recorded one is taken; runtime.port_owner)."""
        self.listener_check: Callable[[InstanceLaunch, ProcessHandle], bool | None] | None = None
        """READY gate: False when the port's listener is not this instance's process group."""
        self.on_spawn: Callable[[InstanceLaunch, ProcessHandle | None], None] | None = None
        """Journal hook: called before each spawn (handle None; an OSError refuses the spawn) and after it."""

    # ---- registry ---------------------------------------------------------------------------
    def add(self, launch: InstanceLaunch) -> None:
        """Register an instance to start (PENDING). Replaces a STOPPED/FAILED record of the same id."""
        with self._lock:
            old = self._records.get(launch.instance_id)
            if old is not None and old.state not in (S.STOPPED, S.FAILED):
                raise ValueError(f"instance {launch.instance_id} is already supervised ({old.state.value})")
            self._records[launch.instance_id] = _Record(launch=launch)
            self.version += 1

    def adopt(self, launch: InstanceLaunch, handle: ProcessHandle, *, started_at: float, healthy: bool) -> None:
        """Take over a process a previous run started; READY if it answers /health, else STARTING."""
        with self._lock:
            rec = _Record(launch=launch, handle=handle, started_at=started_at, start_mono=self.clock())
            self._records[launch.instance_id] = rec
            self._move(rec, S.READY if healthy else S.STARTING)
            if healthy:
                rec.ready_at = self.wall_clock()

    def forget(self, instance_id: str) -> None:
        """Drop a record without touching its process (detach, or after STOPPED)."""
        with self._lock:
            if self._records.pop(instance_id, None) is not None:
                self.version += 1

    def launches(self) -> list[InstanceLaunch]:
        with self._lock:
            return [r.launch for r in self._records.values()]

    def state_of(self, instance_id: str) -> InstanceState | None:
        with self._lock:
            rec = self._records.get(instance_id)
            return rec.state if rec else None

    def handle_of(self, instance_id: str) -> ProcessHandle | None:
        with self._lock:
            rec = self._records.get(instance_id)
            return rec.handle if rec else None

    def statuses(self) -> list[InstanceStatus]:
        with self._lock:
            return [self._status(r) for r in sorted(self._records.values(), key=lambda r: r.launch.instance_id)]

    def _status(self, rec: _Record) -> InstanceStatus:
        ln = rec.launch
        pid = rec.handle.pid if rec.handle is not None and rec.state.live else None
        return InstanceStatus(
            instance_id=ln.instance_id, model=ln.model, replica=ln.replica, served_names=ln.served_names,
            state=rec.state, pid=pid, port=ln.port, url=ln.url, partitions=ln.partitions,
            hip_indices=ln.hip_indices, restarts=rec.restarts, last_error=rec.last_error,
            memory_budget_bytes=ln.memory_bytes_per_rank, started_at=rec.started_at, ready_at=rec.ready_at)

    # ---- commands ---------------------------------------------------------------------------
    def stop(self, instance_id: str, now: float | None = None) -> None:
        """SIGTERM the group (STOPPING); tick() sends SIGKILL after stop_grace_s and marks STOPPED."""
        with self._lock:
            rec = self._records.get(instance_id)
            if rec is None or rec.state in (S.STOPPING, S.STOPPED):
                return
            now = self.clock() if now is None else now
            rec.stop_requested = True
            if rec.handle is not None and not rec.handle.group_empty():
                rec.handle.signal_group(signal.SIGTERM)
                rec.stop_deadline = now + self.vllm.stop_grace_s
                rec.killed = False
                self._move(rec, S.STOPPING)
            else:
                self._move(rec, S.STOPPING if rec.state in (S.STARTING, S.READY) else S.STOPPED)

    def restart(self, instance_id: str, now: float | None = None) -> bool:
        """Operator restart: FAILED/BACKOFF/STOPPED start again at once with a clean crash history; a live
        instance is stopped first (never counted as a crash). False when the id is unknown."""
        with self._lock:
            rec = self._records.get(instance_id)
            if rec is None:
                return False
            rec.restart_times.clear()
            rec.backoff_until = 0.0
            self.events(Event(EventKind.OPERATOR_RESTART, f"operator restart from {rec.state.value}",
                              instance_id=instance_id, model=rec.launch.model))
            if rec.state in (S.FAILED, S.BACKOFF, S.STOPPED):
                self._move(rec, S.STAGING)
                return True
            rec.restart_after_stop = True
            self.stop(instance_id, now)
            if rec.state == S.STOPPED:  # nothing was running (PENDING/STAGING)
                rec.restart_after_stop = False
                self._move(rec, S.STAGING)
            return True

    def stop_many(self, instance_ids: Iterable[str], now: float | None = None) -> None:
        for iid in instance_ids:
            self.stop(iid, now)

    def all_settled(self, instance_ids: Iterable[str] | None = None) -> bool:
        """Every named instance is READY, FAILED or STOPPED (nothing in flight)."""
        settled = (S.READY, S.FAILED, S.STOPPED)
        with self._lock:
            ids = list(self._records) if instance_ids is None else list(instance_ids)
            return all(self._records[i].state in settled for i in ids if i in self._records)

    # ---- the step ---------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> bool:
        """Advance every instance once. Returns True when any state or pid changed."""
        with self._lock:
            now = self.clock() if now is None else now
            before = self.version
            ready: list[InstanceStatus] = []
            for rec in list(self._records.values()):
                if self._step(rec, now):
                    ready.append(self._status(rec))
            if now >= self._next_log_check:
                self._next_log_check = now + LOG_CHECK_INTERVAL_S
                self._rotate_logs()
            changed = self.version != before
        for status in ready:  # outside the lock: the callback may read the backend
            if self.on_ready is not None:
                self.on_ready(status)
        return changed

    def _step(self, rec: _Record, now: float) -> bool:
        """One edge at most per tick. Returns True when the instance just became READY."""
        st = rec.state
        if st == S.PENDING:
            self._move(rec, S.STAGING)  # PENDING -> STAGING
            st = S.STAGING
        if st == S.STAGING:
            if self._neighbour_starting(rec) or not self._old_process_gone(rec):
                return False
            if self.stage_gate is not None and not self.stage_gate(rec.launch):
                return False  # weights still staging: never start on a partial download
            self._spawn(rec, now)  # STAGING -> STARTING (or BACKOFF on spawn error)
        elif st == S.STARTING:
            return self._step_starting(rec, now)
        elif st == S.READY:
            self._step_ready(rec, now)
        elif st == S.BACKOFF and now >= rec.backoff_until:
            self._move(rec, S.STAGING)  # BACKOFF -> STAGING
        elif st == S.STOPPING:
            self._step_stopping(rec, now)
        return False

    def _step_starting(self, rec: _Record, now: float) -> bool:
        assert rec.handle is not None
        code = rec.handle.poll()
        if code is not None:  # STARTING -> BACKOFF/FAILED: exited before becoming healthy
            self._fail(rec, now, f"exited with code {code} while starting: {self._log_reason(rec)}", exit_code=code)
            return False
        if now >= rec.next_probe:
            rec.next_probe = now + STARTING_PROBE_INTERVAL_S
            if self.health(rec.launch.url) and self._listener_is_ours(rec, now):  # STARTING -> READY
                rec.ready_at = self.wall_clock()
                rec.health_failures = 0
                rec.next_probe = now + self.vllm.health_interval_s
                self._move(rec, S.READY)
                return True
        if now - rec.start_mono >= self.vllm.startup_timeout_s:  # STARTING -> BACKOFF: timeout
            rec.handle.signal_group(signal.SIGKILL)
            self._fail(rec, now, f"not healthy within vllm.startup_timeout_s={self.vllm.startup_timeout_s:g}s; "
                                 f"killed. Log: {self._log_reason(rec)}")
        return False

    def _listener_is_ours(self, rec: _Record, now: float) -> bool:
        if self.listener_check is None or rec.handle is None or self.listener_check(rec.launch, rec.handle) is not False:
            return True
        rec.handle.signal_group(signal.SIGKILL)  # ours never bound; the next spawn gets another port
        self._fail(rec, now, f"port {rec.launch.port} answers /health but its listener is not this instance's "
                             "process group (another process holds the port)")
        return False

    def _step_ready(self, rec: _Record, now: float) -> None:
        assert rec.handle is not None
        code = rec.handle.poll()
        if code is not None:  # READY -> BACKOFF: crashed
            self._fail(rec, now, f"exited with code {code}: {self._log_reason(rec)}", exit_code=code)
            return
        if now < rec.next_probe:
            return
        rec.next_probe = now + self.vllm.health_interval_s
        if self.health(rec.launch.url):
            rec.health_failures = 0
            return
        rec.health_failures += 1
        if rec.health_failures >= READY_FAILURES_BEFORE_RESTART:  # READY -> BACKOFF: hung
            rec.handle.signal_group(signal.SIGKILL)
            self._fail(rec, now, f"/health failed {rec.health_failures} times in a row; killed")

    def _step_stopping(self, rec: _Record, now: float) -> None:
        if rec.handle is None or (rec.handle.poll() is not None and rec.handle.group_empty()):
            self._move(rec, S.STOPPED)  # STOPPING -> STOPPED
            if rec.restart_after_stop:  # operator restart: STOPPED -> STAGING
                rec.restart_after_stop = False
                rec.stop_requested = False
                self._move(rec, S.STAGING)
            return
        if not rec.killed and now >= rec.stop_deadline:  # grace over: SIGKILL the group
            rec.handle.signal_group(signal.SIGKILL)
            rec.killed = True

    # ---- helpers ----------------------------------------------------------------------------
    def _move(self, rec: _Record, target: InstanceState) -> None:
        check_transition(rec.launch.instance_id, rec.state, target)
        before, rec.state = rec.state, target
        self.version += 1
        self.events(Event(EventKind.STATE, f"{before.value} -> {target.value}", instance_id=rec.launch.instance_id,
                          model=rec.launch.model, from_state=before.value, to_state=target.value))

    def _neighbour_starting(self, rec: _Record) -> bool:
        mine = set(rec.launch.partitions)
        return any(o is not rec and o.state == S.STARTING and mine & set(o.launch.partitions)
                   for o in self._records.values())

    def _old_process_gone(self, rec: _Record) -> bool:
        """Before a restart, the previous process group must be gone (it may hold VRAM and the port)."""
        if rec.handle is None:
            return True
        if rec.handle.poll() is None or not rec.handle.group_empty():
            rec.handle.signal_group(signal.SIGKILL)
            return False
        return True

    def _spawn(self, rec: _Record, now: float) -> None:
        if self.port_check is not None:
            rec.launch = self.port_check(rec.launch)
        ln = rec.launch
        req = SpawnRequest(instance_id=ln.instance_id, argv=ln.argv, env=dict(ln.env),
                           log_path=logs.log_path(self.log_dir, ln.instance_id),
                           log_max_bytes=self.vllm.log_max_bytes, log_backups=self.vllm.log_backups,
                           preexec_fn=ln.preexec_fn)
        if rec.started_at is not None:
            rec.restarts += 1
            self.events(Event(EventKind.RESTART, f"starting again (restart {rec.restarts})",
                              instance_id=ln.instance_id, model=ln.model))
        try:
            if self.on_spawn is not None:
                self.on_spawn(ln, None)
            rec.handle = self.spawner.spawn(req)
            if self.on_spawn is not None:
                self.on_spawn(ln, rec.handle)
        except (OSError, ValueError) as e:
            rec.handle = None
            rec.started_at = self.wall_clock()
            self._move(rec, S.STARTING)
            self._fail(rec, now, f"cannot start {ln.argv[0] if ln.argv else '?'}: {e}")
            return
        rec.started_at = self.wall_clock()
        rec.start_mono = now
        rec.ready_at = None
        rec.next_probe = now
        self._move(rec, S.STARTING)

    def _fail(self, rec: _Record, now: float, reason: str, exit_code: int | None = None) -> None:
        """Crash bookkeeping: BACKOFF with capped exponential delay, or FAILED past max_restarts."""
        rec.last_error = reason
        rec.ready_at = None
        window = self.vllm.restart_window_s
        rec.restart_times = [t for t in rec.restart_times if now - t < window] + [now]
        if len(rec.restart_times) > self.vllm.max_restarts:
            rec.last_error = (f"{reason} (gave up: {len(rec.restart_times)} failures within "
                              f"vllm.restart_window_s={window:g}s, vllm.max_restarts={self.vllm.max_restarts})")
            self._crash_event(rec, reason, exit_code, None)
            self._move(rec, S.FAILED)
            self.events(Event(EventKind.FAILED, rec.last_error, instance_id=rec.launch.instance_id,
                              model=rec.launch.model, exit_code=exit_code, cause=reason))
            return
        delay = backoff_delay_s(len(rec.restart_times), self.vllm.backoff_initial_s, self.vllm.backoff_max_s)
        rec.backoff_until = now + delay
        self._crash_event(rec, reason, exit_code, delay)
        self._move(rec, S.BACKOFF)

    def _crash_event(self, rec: _Record, reason: str, exit_code: int | None, delay_s: float | None) -> None:
        code = "" if exit_code is None else f"exit code {exit_code}, "
        then = (f"restarting in {delay_s:g}s (failure {len(rec.restart_times)} of at most "
                f"{self.vllm.max_restarts} in {self.vllm.restart_window_s:g}s)") if delay_s is not None else "giving up"
        self.events(Event(EventKind.CRASH, f"{code}{then}: {reason}", instance_id=rec.launch.instance_id,
                          model=rec.launch.model, exit_code=exit_code, cause=reason, backoff_s=delay_s))

    def _log_reason(self, rec: _Record) -> str:
        return logs.failure_reason(logs.log_path(self.log_dir, rec.launch.instance_id)) or "(empty log)"

    def _rotate_logs(self) -> None:
        for rec in self._records.values():
            if rec.state.live:
                logs.rotate_if_large(logs.log_path(self.log_dir, rec.launch.instance_id),
                                     self.vllm.log_max_bytes, self.vllm.log_backups)
