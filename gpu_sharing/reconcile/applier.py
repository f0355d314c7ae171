"""Execute a Plan in the one safe order, touching only the GPUs concerned.

    1. stop what must stop (the plan's to_stop, plus anything of ours on a GPU
       being repartitioned, or every instance of the node when a compute-mode
       change needs a node-wide drain: ``drain.py``), SIGTERM then SIGKILL after
       stop_grace_s;
    2. wait (bounded) until the backend no longer lists those pids: VRAM released;
    3. change modes: memory first (only when node.allow_driver_reload; then one
       driver reload with progress), then compute, per GPU;
    4. re-read the inventory (handles and HIP indices change after a mode change);
    5. start: launches built from the NEW inventory, with CU masks for instances
       sharing a partition; the supervisor brings them up one per partition.
       Instances drained in step 1 that the plan keeps are started again here.

Why errors are values: a BUSY GPU or a failed reload must not take down the
daemon or the other GPUs. Each failure is recorded in the ApplyReport (the next
reconcile retries it); placements on a GPU whose repartition failed are skipped,
and instances that were not stopped keep serving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from gpu_sharing.config.schema import Config
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition
from gpu_sharing.planner.types import Placement, Plan
from gpu_sharing.reconcile.cu_sharing import CuAssignment
from gpu_sharing.reconcile.drain import drain_reason
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.journal import Journal
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.process_group import instance_pids, pids_by_group
from gpu_sharing.runtime.supervisor import InstanceLaunch, Supervisor

VRAM_RELEASE_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05

LaunchBuilder = Callable[[Placement, Sequence[LogicalPartition], int, "str | None", Inventory], InstanceLaunch]
"""(placement, partitions in the new inventory, port, cu_mask, new inventory) -> InstanceLaunch."""
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ApplyFailure:
    target: str
    """instance id or ``gpu N``."""
    stage: str
    """stop, release, memory-mode, reload, compute-mode, inventory, start."""
    message: str
    retryable: bool = True
    """False when the backend says retrying cannot help (NO_PERM, NOT_SUPPORTED, INVAL, SETTING_UNAVAILABLE,
    UNAVAILABLE): the operator must act. The next pass still tries; the message says which it is."""

    def __str__(self) -> str:
        hint = "" if self.retryable else " (not retryable: needs operator action)"
        return f"{self.target}: {self.stage}: {self.message}{hint}"


@dataclass(frozen=True)
class ApplyReport:
    stopped: tuple[str, ...] = ()
    repartitioned: tuple[int, ...] = ()
    started: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failures: tuple[ApplyFailure, ...] = ()
    duration_s: float = 0.0
    mutating_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def actions(self) -> int:
        return len(self.stopped) + len(self.repartitioned) + len(self.started)


@dataclass
class _Run:
    failures: list[ApplyFailure] = field(default_factory=list)
    failed_gpus: set[int] = field(default_factory=set)
    stopped: list[str] = field(default_factory=list)
    repartitioned: list[int] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    mutating_calls: int = 0


class Applier:
    def __init__(self, config: Config, backend: PartitionBackend, supervisor: Supervisor, ports: PortAllocator,
                 build_launch: LaunchBuilder, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, progress: Progress | None = None,
                 cu_masks: Callable[[Plan, Inventory, dict[str, str | None]], CuAssignment] | None = None,
                 journal: Journal | None = None):
        self.config = config
        self.backend = backend
        self.supervisor = supervisor
        self.ports = ports
        self.build_launch = build_launch
        self.clock = clock
        self.sleep = sleep
        self.progress = progress or (lambda _msg: None)
        self.cu_masks = cu_masks
        self.journal = journal
        """Intent journal (runtime.journal): each stop, repartition and reload is recorded before it is done."""

    def apply(self, plan: Plan, inventory: Inventory) -> ApplyReport:
        t0 = self.clock()
        run = _Run()
        repartition_gpus = {t.gpu for t in plan.to_repartition}
        live = [ln for ln in self.supervisor.launches()
                if ln.instance_id not in plan.to_stop and self.supervisor.state_of(ln.instance_id) != InstanceState.STOPPED]
        drain = drain_reason(plan, self.config)
        if drain:
            self.progress(f"draining the node: {drain}")
            wait_gpus = {g.index for g in inventory.gpus}
            to_stop = list(plan.to_stop) + [ln.instance_id for ln in live]
            starting = {p.instance_id for p in plan.to_start}
            restore = tuple(p for p in plan.placements
                            if p.instance_id in {ln.instance_id for ln in live} and p.instance_id not in starting)
            plan = replace(plan, to_start=plan.to_start + restore)  # drained instances the plan keeps: start again
        else:
            wait_gpus = repartition_gpus
            to_stop = list(plan.to_stop) + [ln.instance_id for ln in live
                                            if any(int(p.split(".")[0]) in repartition_gpus for p in ln.partitions)]
        if not self._note(run, "stop_intent", to_stop):
            return self._report(run, plan, t0)
        stopped_pids = self._stop(to_stop, run)
        self._note(run, "stopped", run.stopped)
        if plan.to_repartition:
            self._wait_vram_released(stopped_pids, wait_gpus, run)
            if not self._note(run, "repartition_intent", {t.gpu: f"{t.compute_mode.value}+{t.memory_mode.value}"
                                                          for t in plan.to_repartition}):
                return self._report(run, plan, t0)
            self._repartition(plan, run, inventory)
            self._note(run, "repartitioned", run.repartitioned)
        if run.mutating_calls or plan.to_repartition:
            try:
                inventory = self.backend.inventory()
            except BackendError as e:
                run.failures.append(ApplyFailure("node", "inventory", str(e)))
                return self._report(run, plan, t0)
        self._start(plan, inventory, run)
        return self._report(run, plan, t0)

    # ---- 1-2: stop and wait for VRAM ---------------------------------------------------------
    def _stop(self, instance_ids: list[str], run: _Run) -> set[int]:
        pids: set[int] = set()
        if not instance_ids:
            return pids  # a converged pass: no /proc scan on the hot path
        groups = pids_by_group()  # vLLM V1's EngineCore/workers hold the VRAM: wait for the whole group
        for iid in instance_ids:
            handle = self.supervisor.handle_of(iid)
            if handle is not None:
                pids |= instance_pids(handle.pid, handle.pgid, groups=groups)
            self.progress(f"stopping {iid}")
            self.supervisor.stop(iid)
        grace = self.config.vllm.stop_grace_s + 10.0
        deadline = self.clock() + grace
        pending = [i for i in instance_ids if self.supervisor.state_of(i) is not None]
        while True:
            self.supervisor.tick()
            pending = [i for i in pending if self.supervisor.state_of(i) != InstanceState.STOPPED]
            if not pending or self.clock() >= deadline:
                break
            self.sleep(POLL_INTERVAL_S)
        for iid in instance_ids:
            if iid in pending:
                run.failures.append(ApplyFailure(iid, "stop", f"still running {grace:g}s after SIGTERM/SIGKILL"))
                continue
            launch = next((ln for ln in self.supervisor.launches() if ln.instance_id == iid), None)
            if launch is not None:
                self.ports.release(launch.port)
            self.supervisor.forget(iid)
            run.stopped.append(iid)
        return pids

    def _wait_vram_released(self, pids: set[int], gpus: set[int], run: _Run) -> None:
        if not pids:
            return
        self.progress(f"waiting for VRAM release on GPU {', '.join(map(str, sorted(gpus)))}")
        deadline = self.clock() + VRAM_RELEASE_TIMEOUT_S
        while True:
            try:
                inv = self.backend.inventory()
            except BackendError as e:
                run.failures.append(ApplyFailure("node", "release", str(e)))
                return
            left = {p.pid for g in inv.gpus if g.index in gpus for p in g.processes} & pids
            if not left:
                return
            if self.clock() >= deadline:
                run.failures.append(ApplyFailure(
                    "node", "release", f"pids {sorted(left)} still hold VRAM {VRAM_RELEASE_TIMEOUT_S:g}s after stop"))
                return
            self.sleep(POLL_INTERVAL_S)

    # ---- 3: modes ------------------------------------------------------------------------------
    def _repartition(self, plan: Plan, run: _Run, inventory: Inventory) -> None:
        memory = [t for t in plan.to_repartition if t.memory_changes]
        if memory and not self.config.node.allow_driver_reload:
            for t in memory:
                run.failed_gpus.add(t.gpu)
                run.failures.append(ApplyFailure(f"gpu {t.gpu}", "memory-mode",
                                                 f"changing to {t.memory_mode.value} needs a driver reload; "
                                                 "set node.allow_driver_reload: true to allow it"))
            memory = []
        if memory:
            for t in memory:
                if not self._call(run, t.gpu, "memory-mode", f"setting memory partition {t.memory_mode.value}",
                                  lambda t=t: self.backend.set_memory_mode(t.gpu, t.memory_mode)):
                    run.failed_gpus.add(t.gpu)
            self.progress("reloading the amdgpu driver (memory partition change)")
            self._note(run, "reload_intent")
            reload_ok = self._call(run, None, "reload", "reloading amdgpu", lambda: self.backend.reload_driver(
                progress=lambda msg, frac: self.progress(f"driver reload: {msg} ({frac:.0%})")))
            if not reload_ok:
                run.failed_gpus.update(t.gpu for t in memory)
        reassert = self._after_reload(plan, memory, run, inventory)
        for t in plan.to_repartition:
            if t.gpu in run.failed_gpus or not (t.compute_changes or t.gpu in reassert):
                if t.gpu not in run.failed_gpus:
                    run.repartitioned.append(t.gpu)
                continue
            self.progress(f"repartitioning GPU {t.gpu}: {t.compute_mode.value}+{t.memory_mode.value}")
            if self._call(run, t.gpu, "compute-mode", f"setting compute partition {t.compute_mode.value}",
                          lambda t=t: self.backend.set_compute_mode(t.gpu, t.compute_mode)):
                run.repartitioned.append(t.gpu)
            else:
                run.failed_gpus.add(t.gpu)
        for t in plan.gpus:  # hive GPUs the plan does not repartition: back to the mode they had
            if t.gpu in reassert and t.gpu not in {x.gpu for x in plan.to_repartition}:
                self.progress(f"setting GPU {t.gpu} back to {t.compute_mode.value} after the driver reload")
                if not self._call(run, t.gpu, "compute-mode", f"setting compute partition {t.compute_mode.value}",
                                  lambda t=t: self.backend.set_compute_mode(t.gpu, t.compute_mode)):
                    run.failed_gpus.add(t.gpu)

    def _after_reload(self, plan: Plan, memory: list, run: _Run, inventory: Inventory) -> set[int]:
        """GPUs whose compute mode must be set again: every GPU of a hive whose memory mode was reloaded.

        The reload re-initialises partitioning with the kernel's default (auto) compute mode for the new
        NPS mode (amdgpu.user_partt_mode, default auto; docs/hardware-facts.md: "re-set compute mode
        afterwards"), so a compute mode the plan does not change may still be lost.
        """
        if not memory or any(t.gpu in run.failed_gpus for t in memory):
            return set()
        hives = {g.hive_id for g in inventory.gpus if g.index in {t.gpu for t in memory}}
        return {g.index for g in inventory.gpus if g.hive_id in hives and g.index not in run.failed_gpus}

    def _note(self, run: _Run, what: str, *args) -> bool:
        """Journal one step; False (and a failure) when the journal cannot be written: do not act unrecorded."""
        if self.journal is None:
            return True
        try:
            getattr(self.journal, what)(*args)
            return True
        except OSError as e:
            run.failures.append(ApplyFailure("node", "journal", f"cannot write {self.journal.path}: {e.strerror or e}"))
            return False

    def _call(self, run: _Run, gpu: int | None, stage: str, what: str, fn: Callable[[], None]) -> bool:
        run.mutating_calls += 1
        try:
            fn()
            return True
        except BackendError as e:
            run.failures.append(ApplyFailure(f"gpu {gpu}" if gpu is not None else "node", stage, str(e),
                                             retryable=e.code.retryable))
        except Exception as e:  # a backend bug must not kill the daemon; keep the context
            run.failures.append(ApplyFailure(f"gpu {gpu}" if gpu is not None else "node", stage, f"{what}: {e!r}"))
        return False

    # ---- 5: start ------------------------------------------------------------------------------
    def _start(self, plan: Plan, inventory: Inventory, run: _Run) -> None:
        masks: dict[str, str] = {}
        to_start = list(plan.to_start)
        if self.cu_masks is not None and plan.to_start:
            try:
                cus = self.cu_masks(plan, inventory, self._running_masks())
                masks = dict(cus.masks)
                to_start += self._restart_for_masks(plan, cus, run)
            except GpuSharingError as e:
                run.failures.append(ApplyFailure("node", "start", f"CU masks: {e}; starting without masks"))
        for placement in to_start:
            iid = placement.instance_id
            blocked = sorted({p.gpu for p in placement.partitions} & run.failed_gpus)
            if blocked:
                run.failures.append(ApplyFailure(iid, "start", f"skipped: repartition of GPU {blocked[0]} failed"))
                continue
            state = self.supervisor.state_of(iid)
            if state is not None and state not in (InstanceState.STOPPED, InstanceState.FAILED):
                continue  # already supervised (e.g. adopted): never start a duplicate
            for old in self.supervisor.launches():  # a FAILED/STOPPED record is replaced: free its port
                if old.instance_id == iid:
                    self.ports.release(old.port)
            port = None
            try:
                parts = [inventory.partition(ref) for ref in placement.partitions]
                port = self.ports.allocate()
                launch = self.build_launch(placement, parts, port, masks.get(iid), inventory)
                self.supervisor.add(launch)
            except (KeyError, GpuSharingError, ValueError) as e:
                if port is not None:
                    self.ports.release(port)
                run.failures.append(ApplyFailure(iid, "start", str(e)))
                continue
            self.progress(f"starting {iid} on {', '.join(str(p) for p in placement.partitions)} port {port}")
            run.started.append(iid)

    def _running_masks(self) -> dict[str, str | None]:
        """The HSA_CU_MASK each supervised, not stopped instance runs with (None: no mask)."""
        return {ln.instance_id: dict(ln.env).get("HSA_CU_MASK") for ln in self.supervisor.launches()
                if self.supervisor.state_of(ln.instance_id) != InstanceState.STOPPED}

    def _restart_for_masks(self, plan: Plan, cus: CuAssignment, run: _Run) -> list[Placement]:
        """Stop the running neighbours a rebalance names; return their placements to start again."""
        if not cus.restarts:
            return []
        for iid in cus.restarts:
            self.progress(f"restarting {iid}: {cus.reasons.get(iid, 'CU masks rebalanced')}")
        self._stop(list(cus.restarts), run)
        stopped = set(run.stopped)
        return [p for p in plan.placements if p.instance_id in cus.restarts and p.instance_id in stopped]

    def _report(self, run: _Run, plan: Plan, t0: float) -> ApplyReport:
        return ApplyReport(stopped=tuple(run.stopped), repartitioned=tuple(run.repartitioned),
                           started=tuple(run.started), unchanged=tuple(plan.unchanged), failures=tuple(run.failures),
                           duration_s=self.clock() - t0, mutating_calls=run.mutating_calls)
