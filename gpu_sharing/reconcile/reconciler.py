"""The Reconciler: observe -> plan -> apply, plus supervision, adoption and the state file.

The daemon (``gpu-sharing run``) and the one-shot ``gpu-sharing apply`` are both
built around this class. ``reconcile_once`` is synchronous and idempotent (a
converged node gives a plan with no actions and zero mutating backend calls);
the daemon runs it in a worker thread. ``tick`` is the cheap supervision step
(poll processes, probe health, restart with backoff) and rewrites the state
file whenever a state or pid changed, so a crash of the daemon never loses
track of a running instance.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from gpu_sharing.config.schedule import active_models
from gpu_sharing.config.schema import Config, LauncherKind
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.isolation import unit_name_for
from gpu_sharing.planner import plan as run_planner
from gpu_sharing.planner.types import Plan, RunningInstance, Unplaceable
from gpu_sharing.reconcile.adoption import Recovery, launch_to_entry
from gpu_sharing.reconcile.applier import Applier, ApplyReport, Progress
from gpu_sharing.reconcile.collaborators import (CuMaskPolicy, DemandBuilder, FileMeasuredStore, LaunchBuilder,
                                                 MeasuredStore, Planner)
from gpu_sharing.reconcile.desired import DesiredState, desired_state, effective_config, plan_desired
from gpu_sharing.reconcile.fingerprint import model_fingerprint
from gpu_sharing.reconcile.cu_sharing import cu_masks_for
from gpu_sharing.reconcile.launch import build_launch, listener_guard, mark_launch, port_guard
from gpu_sharing.reconcile.measure import MeasuredRecorder
from gpu_sharing.reconcile.rolling import RollingStep, limit_rolling
from gpu_sharing.reconcile.observe import parse_partition
from gpu_sharing.reconcile.recovery import recover_state_dir
from gpu_sharing.reconcile.staging_gate import StagingGate
from gpu_sharing.runtime.events import Event, EventKind, EventSink, no_events
from gpu_sharing.runtime.health import HealthChecker, http_health
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.journal import Journal
from gpu_sharing.runtime.process_group import instance_pids, pids_by_group
from gpu_sharing.runtime.spawner import ProcessHandle, Spawner
from gpu_sharing.runtime.staging import StagingManager
from gpu_sharing.runtime.state_file import write_state
from gpu_sharing.runtime.supervisor import InstanceLaunch, InstanceStatus, Supervisor

__all__ = ["ConfigDiff", "InstanceStatus", "ReconcileReport", "Reconciler"]


def _local_now() -> datetime:
    return datetime.now().astimezone()


@dataclass(frozen=True)
class ReconcileReport:
    plan: Plan | None
    apply: ApplyReport | None
    unplaceable: tuple[Unplaceable, ...] = ()
    errors: tuple[str, ...] = ()
    """Failures before apply (inventory, sizing, planner) and apply failures as text."""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def actions(self) -> int:
        return self.apply.actions if self.apply else 0


@dataclass(frozen=True)
class ConfigDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    """Model names whose fingerprint changed (their instances restart)."""
    unchanged: tuple[str, ...] = field(default=())


class Reconciler:
    """Orchestrates one node. Every collaborator is passed in (see ``collaborators.py``); the defaults are
    the real implementations, so ``Reconciler(config, backend, state_dir=...)`` is the production wiring."""

    def __init__(self, config: Config, backend: PartitionBackend, *, state_dir: Path, config_path: str | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 wall_clock: Callable[[], datetime] = _local_now, spawner: Spawner | None = None,
                 health_checker: HealthChecker | None = None, simulate: bool = False,
                 sim_state_dir: Path | None = None, progress: Progress | None = None,
                 planner: Planner = run_planner, demands: DemandBuilder = desired_state,
                 launches: LaunchBuilder = build_launch, cu_masks: CuMaskPolicy = cu_masks_for,
                 measured: MeasuredStore | None = None, staging_manager: StagingManager | None = None,
                 events: EventSink | None = None):
        self.backend = backend
        self.events: EventSink = events or no_events
        self.state_dir = Path(state_dir)
        self.config_path = config_path
        self.config_dir = Path(config_path).resolve().parent if config_path else None
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.sim_state_dir: Path | None = None
        if simulate:
            explicit = sim_state_dir or getattr(backend, "state_dir", None)
            self.sim_state_dir = Path(explicit) if explicit else self.state_dir.parent
        self.health = health_checker or http_health
        self.progress = progress
        self.planner = planner
        self.demands = demands
        self.launches = launches
        self.cu_masks = cu_masks
        self.measured = measured or FileMeasuredStore(self.state_dir / "measured_sizes.json")
        self.config = effective_config(config, sim_state_dir=self.sim_state_dir, state_dir=self.state_dir)
        log_dir = Path(self.config.vllm.log_dir) if self.config.vllm.log_dir else self.state_dir / "logs"
        self.recorder = MeasuredRecorder(self.measured)
        self.staging = StagingGate(lambda: self.config, staging_manager)
        self.supervisor = Supervisor(self.config.vllm, log_dir=log_dir, clock=clock, spawner=spawner,
                                     health_checker=self.health, on_ready=self.recorder.on_ready,
                                     stage_gate=self.staging, events=self.events)
        self.ports = PortAllocator(tuple(self.config.vllm.port_range), self.config.vllm.host)
        self.journal = Journal(self.state_dir)
        self.supervisor.on_spawn = self._journal_spawn
        self.supervisor.port_check = port_guard(self.ports, self.state_dir)
        if self.config.node.launcher == LauncherKind.DIRECT:  # systemd-run: vLLM is not in our process group
            self.supervisor.listener_check = listener_guard
        self._fingerprints: dict[str, str] = {}
        self._reconcile_lock = threading.Lock()
        self._saved_version = -1
        self._held: dict[str, str] = {}
        """instance id -> why it is held stopped (memory_policy: stop); cleared by update_config."""
        self._held_models: dict[str, str] = {}
        """model -> why the operator holds it stopped (``gpu-sharing hold``); only ``release`` clears it."""
        self._unplaceable_seen: frozenset = frozenset()
        self._drain: Callable[[Sequence[str]], None] | None = None
        self.rolling: tuple[RollingStep, ...] = ()
        """The rolling replacements of the last pass (only with ``enable_rolling``: the daemon)."""
        self._rolling_said: dict[str, str] = {}
        self._desired_cache: tuple[tuple, DesiredState] | None = None
        self._replica_targets: dict[str, int] = {}
        """Autoscaler targets for models with ``scaling`` (see set_replica_targets)."""
        self.last_plan: Plan | None = None
        self.last_desired: DesiredState | None = None
        self.last_report: ReconcileReport | None = None
        self.last_recovery: Recovery | None = None

    # ---- config ---------------------------------------------------------------------------------
    def update_config(self, config: Config) -> ConfigDiff:
        """Swap the config; the next reconcile_once touches only instances of changed models."""
        new = effective_config(config, sim_state_dir=self.sim_state_dir, state_dir=self.state_dir)
        old_fp = {m.name: model_fingerprint(m, self.config) for m in self.config.models if m.enabled}
        new_fp = {m.name: model_fingerprint(m, new) for m in new.models if m.enabled}
        diff = ConfigDiff(
            added=tuple(sorted(set(new_fp) - set(old_fp))), removed=tuple(sorted(set(old_fp) - set(new_fp))),
            changed=tuple(sorted(n for n in set(old_fp) & set(new_fp) if old_fp[n] != new_fp[n])),
            unchanged=tuple(sorted(n for n in set(old_fp) & set(new_fp) if old_fp[n] == new_fp[n])))
        self.config = new
        self.supervisor.vllm = new.vllm
        self._held.clear()
        self._desired_cache = None
        self.staging.reset()  # a failed staging is retried after a reload
        return diff

    def attach_events(self, sink: EventSink) -> None:
        """Send this reconciler's and its supervisor's events to ``sink`` (the daemon's stream)."""
        self.events = sink
        self.supervisor.events = sink

    def enable_rolling(self, drain: Callable[[Sequence[str]], None]) -> None:
        """Daemon mode: replace changed multi-replica models one replica at a time (rolling.py), and call
        ``drain(ids)`` before stopping instances (the router stops sending to them first)."""
        self._drain = drain
        self.rolling_enabled = True

    rolling_enabled = False

    def rolling_due(self) -> bool:
        """A rolling replacement waits for a pass and every instance of its model is READY now."""
        pending = {s.model for s in self.rolling if s.held_back and not s.all_at_once}
        if not pending:
            return False
        states = {st.instance_id: st.state for st in self.supervisor.statuses() if st.model in pending}
        return all(v == InstanceState.READY for v in states.values())

    # ---- operator / policy holds -------------------------------------------------------------------
    def hold(self, instance_id: str, reason: str) -> None:
        """Keep an instance stopped (it is not started again) until ``release`` or a config reload."""
        self._held[instance_id] = reason

    def release(self, instance_ids: Sequence[str] | None = None) -> list[str]:
        """Let held instances start again (all when None); returns those released."""
        ids = list(self._held) if instance_ids is None else [i for i in instance_ids if i in self._held]
        for i in ids:
            del self._held[i]
        return ids

    def set_replica_targets(self, targets: dict[str, int]) -> None:
        """Replica counts for models with ``scaling`` (the daemon's autoscaler); the next pass plans them."""
        self._replica_targets = dict(targets)

    @property
    def held(self) -> dict[str, str]:
        """A copy: instance id -> why it is held."""
        return dict(self._held)

    def hold_model(self, model: str, reason: str) -> None:
        """Keep every replica of a model out of the plan until ``release_model`` (survives reloads)."""
        self._held_models[model] = reason

    def release_model(self, model: str) -> bool:
        return self._held_models.pop(model, None) is not None

    @property
    def held_models(self) -> dict[str, str]:
        return dict(self._held_models)

    def _held_ids(self, desired: DesiredState) -> set[str]:
        ids = set(self._held)
        for d in desired.demands:
            if d.name in self._held_models:
                ids.update(d.instance_id(r) for r in range(d.replicas))
        return ids

    # ---- observe -> plan -> apply ----------------------------------------------------------------
    def current_instances(self) -> tuple[RunningInstance, ...]:
        """What we supervise now (not STOPPED), as the planner sees running instances."""
        out = []
        for ln in self.supervisor.launches():
            if self.supervisor.state_of(ln.instance_id) == InstanceState.STOPPED:
                continue
            out.append(RunningInstance(instance_id=ln.instance_id, model=ln.model, replica=ln.replica,
                                       fingerprint=ln.fingerprint,
                                       partitions=tuple(parse_partition(p) for p in ln.partitions),
                                       memory_bytes_per_rank=ln.memory_bytes_per_rank))
        return tuple(sorted(out, key=lambda r: r.instance_id))

    def desired(self, inventory: Inventory) -> DesiredState:
        """The desired state now. Sizing every model for every tp is the costliest part of a converged pass;
        it is redone only when the config, the measured sizes, the open windows or the GPUs change."""
        now = self.wall_clock()
        key = (id(self.config), self.measured.version(), tuple(sorted(active_models(self.config, now).items())),
               tuple(g.index for g in inventory.gpus), tuple(sorted(self._replica_targets.items())))
        if self._desired_cache is None or self._desired_cache[0] != key:
            desired = self.demands(self.config, gpu_indices=[g.index for g in inventory.gpus], now=now,
                                   config_dir=self.config_dir, measured=self.measured.load(),
                                   replica_targets=self._replica_targets)
            self._desired_cache = (key, desired)
        return self._desired_cache[1]

    def make_plan(self, inventory: Inventory | None = None) -> tuple[Plan, tuple[Unplaceable, ...]]:
        """Observe (unless given an inventory) and plan; nothing is changed."""
        inventory = inventory if inventory is not None else self.backend.inventory()
        desired = self.desired(inventory)
        self.last_desired = desired
        self._fingerprints = desired.fingerprints
        running = self.current_instances()
        plan = plan_desired(desired, inventory, running, held=self._held_ids(desired), planner=self.planner)
        if self.rolling_enabled:
            ready = {st.instance_id: st.state == InstanceState.READY for st in self.supervisor.statuses()}
            plan, self.rolling = limit_rolling(plan, running, ready, desired.fingerprints)
        return plan, desired.problems

    def reconcile_once(self) -> ReconcileReport:
        with self._reconcile_lock:
            t0 = self.clock()
            try:
                inventory = self.backend.inventory()
                plan, problems = self.make_plan(inventory)
            except GpuSharingError as e:
                report = ReconcileReport(plan=None, apply=None, errors=(str(e),), duration_s=self.clock() - t0)
                self.last_report = report
                return report
            self.last_plan = plan
            self._rolling_events()
            if self._drain is not None and plan.to_stop:
                self._drain(plan.to_stop)
            result = self._applier().apply(plan, inventory)
            self.save_state(force=True)
            errors = tuple(str(f) for f in result.failures) + tuple(
                f"gpu {u.index} ({u.bdf}): readings failed, left as it is: {u.reason}" for u in inventory.unknown)
            report = ReconcileReport(plan=plan, apply=result, unplaceable=tuple(plan.unplaceable) + problems,
                                     errors=errors, duration_s=self.clock() - t0)
            self.last_report = report
            self._report_events(plan, report)
            return report

    def _report_events(self, plan: Plan, report: ReconcileReport) -> None:
        """Repartitions done, and unplaceable replicas when that set changes (not on every pass)."""
        if report.ok:
            for t in plan.to_repartition:
                self.events(Event(EventKind.REPARTITION, f"GPU {t.gpu}: compute {t.compute_mode.value}, "
                                  f"memory {t.memory_mode.value}"))
        seen = frozenset((u.model, u.replica, u.reason) for u in report.unplaceable)
        for model, replica, reason in sorted(seen - self._unplaceable_seen):
            self.events(Event(EventKind.UNPLACEABLE, f"replica {replica} not placed: {reason}", model=model))
        self._unplaceable_seen = seen

    def _rolling_events(self) -> None:
        said = {s.model: s.message() for s in self.rolling}
        for model, msg in sorted(said.items()):
            if self._rolling_said.get(model) != msg:
                self.events(Event(EventKind.ROLLING, msg, model=model))
        self._rolling_said = said

    def apply_plan(self, plan: Plan) -> ApplyReport:
        """Apply a given plan (``apply`` shows the plan first; tests force placements the planner refuses)."""
        with self._reconcile_lock:
            self.last_plan = plan
            result = self._applier().apply(plan, self.backend.inventory())
            self.save_state(force=True)
            return result

    def _applier(self) -> Applier:
        config, fingerprints = self.config, self._fingerprints

        def build(placement, partitions, port, cu_mask, inventory):
            return mark_launch(self.launches(placement, partitions, port, cu_mask, inventory, config=config,
                                             fingerprint=fingerprints.get(placement.model, ""),
                                             config_dir=self.config_dir), self.state_dir)
        return Applier(config, self.backend, self.supervisor, self.ports, build, clock=self.clock,
                       sleep=self.sleep, progress=self.progress,
                       cu_masks=lambda plan, inv, running: self.cu_masks(plan, inv, config, running),
                       journal=self.journal)

    def _journal_spawn(self, launch: InstanceLaunch, handle: ProcessHandle | None) -> None:
        """Supervisor hook: the launch record before the spawn, its process group after (runtime.journal)."""
        if handle is None:
            self.journal.spawn_intent(launch_to_entry(launch, None, None))
        else:
            self.journal.spawned(launch.instance_id, handle.pid, handle.pgid)

    # ---- supervision --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        self.supervisor.tick(now)
        if self.recorder.has_pending:
            self._record_measured()
        self.save_state()

    def _record_measured(self) -> None:
        """Measured sizes of instances that became READY (see measure.py)."""
        try:
            inventory = self.backend.inventory()
        except BackendError as e:
            self.recorder.errors.append(f"recording measured sizes: {e}")
            return
        launches = {ln.instance_id: ln for ln in self.supervisor.launches()}
        by_group = pids_by_group()
        groups = {iid: self.instance_pids(iid, by_group) for iid in launches}
        self.recorder.drain(inventory, launches, groups, {m.name: m for m in self.config.models})

    def instance_pids(self, instance_id: str, groups: Mapping[int, Iterable[int]] | None = None) -> frozenset[int]:
        """Every pid of a live instance (process group, systemd unit): vLLM V1 holds VRAM in children."""
        handle = self.supervisor.handle_of(instance_id)
        if handle is None:
            return frozenset()
        unit = unit_name_for(instance_id) if self.config.node.launcher == LauncherKind.SYSTEMD_RUN else None
        return instance_pids(handle.pid, handle.pgid, groups=groups, unit_name=unit)

    def statuses(self) -> list[InstanceStatus]:
        return self.supervisor.statuses()

    def wait_settled(self, timeout_s: float, on_tick: Callable[[], None] | None = None,
                     interval_s: float = 0.05) -> bool:
        """Tick until every instance is READY, FAILED or STOPPED, or timeout_s passes."""
        deadline = self.clock() + timeout_s
        while True:
            self.tick()
            if on_tick is not None:
                on_tick()
            if self.supervisor.all_settled():
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(interval_s)

    # ---- state file, adoption, shutdown -----------------------------------------------------------
    def save_state(self, force: bool = False) -> None:
        version = self.supervisor.version
        if not force and version == self._saved_version:
            return
        entries = []
        launches = {ln.instance_id: ln for ln in self.supervisor.launches()}
        for st in self.supervisor.statuses():
            launch = launches.get(st.instance_id)
            if st.state == InstanceState.STOPPED or launch is None:
                continue  # (launch None: forgotten by another thread in between)
            handle = self.supervisor.handle_of(st.instance_id)
            entries.append(launch_to_entry(launch, st, handle))
        write_state(self.state_dir, entries)
        self.journal.checkpoint()
        self._saved_version = version

    def adopt(self, restart_dead: bool = True) -> list[str]:
        """Recover what a previous run left (``recovery.py``): adopt our live instances, stop orphans, drop
        dead records (never restarted as recorded; the next plan starts them from the current inventory).
        ``restart_dead`` is kept for callers; nothing is restarted here either way."""
        del restart_dead
        self.last_recovery = recover_state_dir(
            self.state_dir, self.supervisor, self.ports, self.health, self.backend,
            grace_s=self.config.vllm.stop_grace_s, clock=self.clock, sleep=self.sleep,
            progress=self.progress or (lambda _msg: None))
        self.save_state(force=True)
        return list(self.last_recovery.adopted)

    def stop_instances(self, instance_ids: Sequence[str], timeout_s: float) -> list[str]:
        """Stop some instances (SIGTERM, SIGKILL after grace); forget them; return those that stopped."""
        ids = [i for i in instance_ids if self.supervisor.state_of(i) is not None]
        now = self.clock()
        self.supervisor.stop_many(ids, now)
        deadline = now + timeout_s
        while True:
            self.supervisor.tick()
            left = [i for i in ids if self.supervisor.state_of(i) != InstanceState.STOPPED]
            if not left:
                break
            if self.clock() >= deadline:  # out of time: SIGKILL whatever is left
                for i in left:
                    h = self.supervisor.handle_of(i)
                    if h is not None:
                        h.signal_group(signal.SIGKILL)
                if self.clock() >= deadline + 5.0:
                    break
            self.sleep(0.05)
        stopped = [i for i in ids if self.supervisor.state_of(i) == InstanceState.STOPPED]
        for i in stopped:
            launch = next((ln for ln in self.supervisor.launches() if ln.instance_id == i), None)
            if launch is not None:
                self.ports.release(launch.port)
            self.supervisor.forget(i)
        self.save_state(force=True)
        return stopped

    def stop_all(self, timeout_s: float = 60.0) -> list[str]:
        return self.stop_instances([ln.instance_id for ln in self.supervisor.launches()], timeout_s)

    def detach(self) -> None:
        """Leave every instance running (on_exit: keep): write the state file for the next run to adopt."""
        self.save_state(force=True)
