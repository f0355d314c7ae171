"""The VRAM policy job: over-budget instances get their memory_policy; foreign processes are reported only.

Why in the daemon and not the reconciler: acting on a violation (restart, or stop and
hold until a reload) is a supervision decision taken between reconcile passes; the
reconciler only offers ``stop_instances`` and ``hold``.
"""

from __future__ import annotations

from typing import Callable, Iterator

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.isolation import MemoryAction, VramBudget, VramReport, VramViolation, VramWatch
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.reconcile.observe import parse_partition
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.events import Event, EventKind, EventSink
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.process_group import pids_by_group


def instance_budgets(reconciler: Reconciler) -> Iterator[VramBudget]:
    """Every live instance of ours has a budget, so none of them counts as foreign. An instance is all
    its processes (vLLM V1 holds VRAM in its EngineCore and worker children: runtime/process_group.py)."""
    models = {m.name: m for m in reconciler.config.models}
    groups = pids_by_group()
    for s in reconciler.statuses():
        m = models.get(s.model)
        if s.state in (InstanceState.STOPPED, InstanceState.FAILED) or s.pid is None or m is None:
            continue
        pids = reconciler.instance_pids(s.instance_id, groups) | {s.pid}
        yield VramBudget(s.instance_id, m.limits.memory_bytes or s.memory_budget_bytes, pids,
                         tuple(parse_partition(p) for p in s.partitions),
                         MemoryAction(m.limits.memory_policy.value), m.limits.memory_tolerance_fraction)


def run_vram_check(reconciler: Reconciler, inventory: Inventory, metrics: DaemonMetrics, events: EventSink,
                   reconcile: Callable[[], None]) -> VramReport:
    """One check: act on violations (warn / restart / stop and hold), count them, report foreign pids."""
    models = {s.instance_id: s.model for s in reconciler.statuses()}

    def act(v: VramViolation) -> None:
        events(Event(EventKind.VRAM_POLICY, f"{v.action.value}: {v.message}", instance_id=v.instance_id,
                     model=models.get(v.instance_id, "")))
        if v.action in (MemoryAction.RESTART, MemoryAction.STOP):
            reconciler.stop_instances([v.instance_id], reconciler.config.vllm.stop_grace_s + 5)
            if v.action == MemoryAction.STOP:
                reconciler.hold(v.instance_id, v.message)
            reconcile()

    watch = VramWatch(inventory=lambda: inventory, budgets=lambda: instance_budgets(reconciler), act=act)
    report = watch.run_once()
    for err in watch.errors:
        events(Event(EventKind.ERROR, f"vram policy: {err}"))
    for v in report.violations:
        metrics.vram_violations.labels(instance=v.instance_id, action=v.action.value).inc()
    metrics.foreign_processes.set(len(report.foreign))
    for f in report.foreign:
        events(Event(EventKind.FOREIGN_PROCESS,
                     f"pid {f.pid} ({f.name}) on managed partition {f.partition}: reported, not killed"))
    return report
