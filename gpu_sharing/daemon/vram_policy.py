"""The VRAM policy job: over-budget instances get their memory_policy; foreign processes are reported only.

Why in the daemon and not the reconciler: acting on a violation (restart, or stop and
hold until a reload) is a supervision decision taken between reconcile passes; the
reconciler only offers ``stop_instances`` and ``hold``.
"""

from __future__ import annotations

from typing import Callable, Iterator

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.isolation import MemoryAction, VramBudget, VramReport, VramViolation, VramWatch
from gpu_sharing.metrics.snapshot import DaemonCounters
from gpu_sharing.reconcile.observe import parse_partition
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.process_group import pids_by_group

EventFn = Callable[[str, str], None]


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


def run_vram_check(reconciler: Reconciler, inventory: Inventory, counters: DaemonCounters, event: EventFn,
                   reconcile: Callable[[], None]) -> VramReport:
    """One check: act on violations (warn / restart / stop and hold), count them, report foreign pids."""
    def act(v: VramViolation) -> None:
        event("vram-over-budget", v.message)
        if v.action in (MemoryAction.RESTART, MemoryAction.STOP):
            reconciler.stop_instances([v.instance_id], reconciler.config.vllm.stop_grace_s + 5)
            if v.action == MemoryAction.STOP:
                reconciler.hold(v.instance_id, v.message)
            reconcile()

    watch = VramWatch(inventory=lambda: inventory, budgets=lambda: instance_budgets(reconciler), act=act)
    report = watch.run_once()
    for err in watch.errors:
        event("vram-policy-error", err)
    for v in report.violations:
        key = (v.instance_id, v.action.value)
        counters.vram_violations[key] = counters.vram_violations.get(key, 0) + 1
    counters.foreign_processes = len(report.foreign)
    for f in report.foreign:
        event("foreign-process", f"pid {f.pid} ({f.name}) on managed partition {f.partition}: reported, not killed")
    return report
