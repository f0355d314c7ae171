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

import dataclasses

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from gpu_sharing.config.schema import Config
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.planner.types import Plan, RunningInstance, Unplaceable
from gpu_sharing.reconcile import wiring
from gpu_sharing.reconcile.staging_gate import StagingGate
from gpu_sharing.reconcile.adoption import adopt_entries, launch_to_entry
from gpu_sharing.reconcile.applier import ApplyFailure, Applier, ApplyReport, Progress
from gpu_sharing.reconcile.measure import MeasuredRecorder
from gpu_sharing.reconcile.observe import parse_partition
from gpu_sharing.runtime.health import HealthChecker, http_health
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.spawner import Spawner
from gpu_sharing.runtime.state_file import read_state, write_state
from gpu_sharing.runtime.supervisor import InstanceStatus, Supervisor

__all__ = ["ConfigDiff", "InstanceStatus", "ReconcileReport", "Reconciler"]


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

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class Reconciler:
    def __init__(self, config: Config, backend: PartitionBackend, *, state_dir: Path, config_path: str | None = None,
                 clock: Callable[[], float] = time.monotonic, spawner: Spawner | None = None,
                 health_checker: HealthChecker | None = None, simulate: bool = False,
                 sim_state_dir: Path | None = None, sleep: Callable[[float], None] = time.sleep,
                 progress: Progress | None = None):
        self.backend = backend
        self.state_dir = Path(state_dir)
        self.config_path = config_path
        self.clock = clock
        self.sleep = sleep
        self.simulate = simulate
        self.sim_state_dir = Path(sim_state_dir) if sim_state_dir else getattr(backend, "state_dir", None)
        self.health = health_checker or http_health
        self.progress = progress
        self.config = self._effective(config)
        self.measured_path = self.state_dir / "measured_sizes.json"
        log_dir = Path(self.config.vllm.log_dir) if self.config.vllm.log_dir else self.state_dir / "logs"
        self._measure = MeasuredRecorder(self)
        self.staging = StagingGate(lambda: self.config)
        self.supervisor = Supervisor(self.config.vllm, log_dir=log_dir, clock=clock, spawner=spawner,
                                     health_checker=self.health, on_ready=self._measure.on_ready,
                                     stage_gate=self.staging)
        self.ports = PortAllocator(tuple(self.config.vllm.port_range), self.config.vllm.host)
        self._fingerprints: dict[str, str] = {}
        self._reconcile_lock = threading.Lock()
        self._saved_version = -1
        self.last_plan: Plan | None = None
        self.active: dict[str, bool] | None = None
        self.held: dict[str, str] = {}
        self._demand_cache: tuple | None = None
        """instance id -> why it is held stopped (memory_policy: stop); cleared by update_config."""
        """Schedule windows: model name -> window open (closed = 0 replicas); None = all open."""
        self.last_report: ReconcileReport | None = None

    # ---- config ---------------------------------------------------------------------------------
    def _effective(self, config: Config) -> Config:
        """Identical entries share one process (dedupe); under --simulate the vLLM command becomes the
        fake server (same argv as vllm serve)."""
        from gpu_sharing.reconcile.dedupe import merged_config

        config = merged_config(config)
        if not self.simulate:
            return config
        sim = wiring._module("gpu_sharing.runtime.simulation", "the simulated vLLM settings")
        state = self.sim_state_dir or Path(self.state_dir).parent
        vllm = sim.simulated_vllm_settings(config.vllm, sim_state_dir=Path(state),
                                           startup_time_s=config.node.simulator.startup_time_s)
        return config.model_copy(update={"vllm": vllm})

    def update_config(self, config: Config) -> ConfigDiff:
        """Swap the config; the next reconcile_once touches only instances of changed models."""
        new = self._effective(config)
        old_fp = {m.name: wiring.model_fingerprint(m, self.config) for m in self.config.models if m.enabled}
        new_fp = {m.name: wiring.model_fingerprint(m, new) for m in new.models if m.enabled}
        diff = ConfigDiff(
            added=tuple(sorted(set(new_fp) - set(old_fp))), removed=tuple(sorted(set(old_fp) - set(new_fp))),
            changed=tuple(sorted(n for n in set(old_fp) & set(new_fp) if old_fp[n] != new_fp[n])),
            unchanged=tuple(sorted(n for n in set(old_fp) & set(new_fp) if old_fp[n] == new_fp[n])))
        self.config = new
        self.supervisor.vllm = new.vllm
        self.held.clear()
        self._demand_cache = None
        self.staging.reset()  # a failed staging is retried after a reload
        return diff

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

    def make_plan(self, inventory: Inventory | None = None) -> tuple[Plan, tuple[Unplaceable, ...]]:
        """Observe (unless given an inventory) and plan; nothing is changed."""
        inventory = inventory if inventory is not None else self.backend.inventory()
        config_dir = Path(self.config_path).resolve().parent if self.config_path else None
        try:
            measured_mtime = self.measured_path.stat().st_mtime_ns if self.measured_path else None
        except OSError:
            measured_mtime = None
        key = (id(self.config), measured_mtime, tuple(sorted((self.active or {}).items())),
               tuple(g.index for g in inventory.gpus))
        if self._demand_cache is None or self._demand_cache[0] != key:
            # Sizing every model for every tp is the costliest part of a converged pass; it only changes
            # with the config, the measured sizes or the schedule windows.
            self._demand_cache = (key, wiring.build_demands(self.config, config_dir=config_dir,
                                                            measured_path=self.measured_path, active=self.active,
                                                            gpu_indices=[g.index for g in inventory.gpus]))
        demands, policy, problems = self._demand_cache[1]
        self._fingerprints = {d.name: d.fingerprint for d in demands}
        plan = wiring.run_planner(inventory, demands, self.current_instances(), policy)
        return plan, tuple(problems)

    def reconcile_once(self) -> ReconcileReport:
        with self._reconcile_lock:
            t0 = self.clock()
            try:
                inventory = self.backend.inventory()
                plan, problems = self.make_plan(inventory)
                if self.held:  # instances stopped by policy (VRAM over budget) stay stopped until a reload
                    plan = dataclasses.replace(plan, to_start=tuple(p for p in plan.to_start
                                                                     if p.instance_id not in self.held))
            except (BackendError, GpuSharingError) as e:
                report = ReconcileReport(plan=None, apply=None, errors=(str(e),), duration_s=self.clock() - t0)
                self.last_report = report
                return report
            self.last_plan = plan
            applier = self._applier()
            result = applier.apply(plan, inventory)
            self.save_state(force=True)
            errors = tuple(f"{f.target}: {f.stage}: {f.message}" for f in result.failures)
            report = ReconcileReport(plan=plan, apply=result, unplaceable=tuple(plan.unplaceable) + problems,
                                     errors=errors, duration_s=self.clock() - t0)
            self.last_report = report
            return report

    def apply_plan(self, plan: Plan) -> ApplyReport:
        """Apply a given plan (tests force placements the planner would refuse)."""
        with self._reconcile_lock:
            self.last_plan = plan
            result = self._applier().apply(plan, self.backend.inventory())
            self.save_state(force=True)
            return result

    def _applier(self) -> Applier:
        def fingerprint(model: str) -> str:
            return self._fingerprints.get(model, "")
        build = wiring.make_launch_builder(lambda: self.config, fingerprint)
        return Applier(self.config, self.backend, self.supervisor, self.ports, build, clock=self.clock,
                       sleep=self.sleep, progress=self.progress,
                       cu_masks=lambda plan, inv: wiring.cu_masks_for(plan, inv, self.config))

    # ---- supervision --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        self.supervisor.tick(now)
        self.save_state()

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
        self._saved_version = version

    def adopt(self, restart_dead: bool = True) -> list[str]:
        """Adopt live instances of ours from the state file (READY if healthy); dead ones are restarted
        as recorded when restart_dead (``stop`` passes False: it must never start anything)."""
        try:
            entries = read_state(self.state_dir)
        except ValueError as e:
            if self.progress:
                self.progress(f"not adopting: {e}")
            return []
        adopted = adopt_entries(entries, self.supervisor, self.ports, self.health, self.config,
                                restart_dead=restart_dead)
        self.save_state(force=True)
        return adopted

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

    def failure(self, instance_id: str) -> ApplyFailure | None:
        if not self.last_report or not self.last_report.apply:
            return None
        return next((f for f in self.last_report.apply.failures if f.target == instance_id), None)
