"""Isolation of instances that share a node or a partition.

A partition is hardware isolation; inside one partition and on the host we
add: disjoint XCC-spread ``HSA_CU_MASK`` sets, a VRAM budget monitor, CPU
pinning / user drop (direct launcher) or a systemd-run transient unit
(device, CPU, memory confinement).

API for the other layers:

* ``assign_cu_masks(cu_count=, xcc_count=, requests={iid: share|count|None}) -> {iid: "0:..."}``
  per partition; raises ``UserError`` with the numbers for impossible sets.
* ``ComputeLimits.from_settings(model.limits)``.
* ``ResourceIsolator(launcher=config.node.launcher)``:
  ``.check(groups, partitions)`` (apply-time share check), ``.cu_masks(partition, members)``,
  ``.preexec_for(limits, gpu.numa_node)`` (spawner preexec hook, direct launcher),
  ``.wrap_argv(instance_id=, argv=, env=, limits=, partitions=, numa_node=)`` (systemd-run),
  ``.vram_budget(...)``.
* ``VramMonitor().check(budgets, inventory) -> VramReport`` (violations with action, foreign processes);
  ``VramWatch(inventory=, budgets=, act=).run_once()`` keeps the counters metrics export.
* ``unit_name_for(instance_id)``, ``systemd_run_argv(...)`` (``--pipe``: supervise the systemd-run pid), ``systemctl_stop_argv(unit)``, ``describe_limits(...)``.
"""

from gpu_sharing.isolation.confinement import systemctl_stop_argv, systemd_run_argv, unit_name_for
from gpu_sharing.isolation.cu_masks import assign_cu_masks, assign_cu_sets, resolve_cu_counts
from gpu_sharing.isolation.limits import ComputeLimits, ResourceIsolator, describe_limits
from gpu_sharing.isolation.vram_monitor import (
    ForeignProcess,
    MemoryAction,
    VramBudget,
    VramMonitor,
    VramReport,
    VramViolation,
    VramWatch,
)

__all__ = [
    "ComputeLimits", "ResourceIsolator", "describe_limits", "assign_cu_masks", "assign_cu_sets",
    "resolve_cu_counts", "systemd_run_argv", "systemctl_stop_argv", "unit_name_for", "VramMonitor", "VramBudget", "VramReport",
    "VramViolation", "VramWatch", "ForeignProcess", "MemoryAction",
]
