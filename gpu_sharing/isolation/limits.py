"""ComputeLimits (what a model asks for) and ResourceIsolator (how we enforce it on this node).

Why a separate value type: ``ModelSettings.limits`` is a pydantic settings
object; the isolator works on a frozen dataclass with units in the names so
callers (applier, daemon, status) can hash and compare it and tests can
build one without a config file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_sharing.config.schema import ComputeLimitsSettings, LauncherKind
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition, PartitionRef
from gpu_sharing.isolation import confinement
from gpu_sharing.isolation.cu_masks import CuRequest, assign_cu_masks, assign_cu_sets, mask_cus, xcc_spread
from gpu_sharing.isolation.vram_monitor import MemoryAction, VramBudget


@dataclass(frozen=True)
class ComputeLimits:
    compute_share: float | None = None
    cu_count: int | None = None
    memory_bytes: int | None = None
    """VRAM cap per rank; None: the sized total is the budget."""
    memory_policy: MemoryAction = MemoryAction.WARN
    memory_tolerance_fraction: float = 0.05
    cpu_cores: int | None = None
    numa_local: bool = True
    host_memory_bytes: int | None = None
    user: str | None = None

    @classmethod
    def from_settings(cls, s: ComputeLimitsSettings) -> "ComputeLimits":
        return cls(compute_share=s.compute_share, cu_count=s.cu_count,
                   memory_bytes=int(s.memory_bytes) if s.memory_bytes is not None else None,
                   memory_policy=MemoryAction(s.memory_policy.value),
                   memory_tolerance_fraction=s.memory_tolerance_fraction, cpu_cores=s.cpu_cores,
                   numa_local=s.numa_local,
                   host_memory_bytes=int(s.host_memory_bytes) if s.host_memory_bytes is not None else None,
                   user=s.user)

    @property
    def cu_request(self) -> CuRequest:
        """What assign_cu_masks takes: exact count, else share, else None (equal split)."""
        if self.cu_count is not None:
            return int(self.cu_count)
        return float(self.compute_share) if self.compute_share is not None else None


class ResourceIsolator:
    """Applies ComputeLimits on one node: CU masks, CPU pinning, user, device/memory confinement."""

    def __init__(self, *, launcher: LauncherKind = LauncherKind.DIRECT,
                 sys_node_dir: str = confinement.SYS_NODE_DIR,
                 allowed_cpus: Sequence[int] | None = None,
                 euid: Callable[[], int] = os.geteuid):
        self.launcher = LauncherKind(launcher)
        self.sys_node_dir = sys_node_dir
        self.allowed_cpus = tuple(allowed_cpus) if allowed_cpus is not None else tuple(sorted(os.sched_getaffinity(0)))
        self.euid = euid

    # ---- CU masks ------------------------------------------------------------------------------
    def check(self, groups: Mapping[PartitionRef, Mapping[str, ComputeLimits]],
              partitions: Mapping[PartitionRef, LogicalPartition]) -> None:
        """Raise UserError (exit 2) naming the partition when a co-located share set is impossible."""
        for ref, members in groups.items():
            part = partitions[ref]
            try:
                assign_cu_sets(cu_count=part.cu_count, xcc_count=part.xcc_count,
                               requests={iid: lim.cu_request for iid, lim in members.items()})
            except UserError as e:
                raise UserError(f"partition {ref} ({part.cu_count} CUs, {part.xcc_count} XCCs): {e}") from e

    def cu_masks(self, partition: LogicalPartition, members: Mapping[str, ComputeLimits],
                 tp: Mapping[str, int] | None = None) -> dict[str, str]:
        """HSA_CU_MASK per instance on one partition; instances alone without limits get none."""
        if len(members) == 1 and next(iter(members.values())).cu_request is None:
            return {}
        try:
            return assign_cu_masks(cu_count=partition.cu_count, xcc_count=partition.xcc_count,
                                   requests={iid: lim.cu_request for iid, lim in members.items()}, visible_gpus=tp)
        except UserError as e:
            raise UserError(f"partition {partition.id} ({partition.cu_count} CUs, {partition.xcc_count} XCCs): {e}") from e

    # ---- host confinement ----------------------------------------------------------------------
    def cpus_for(self, limits: ComputeLimits, numa_node: int | None) -> tuple[int, ...] | None:
        """CPUs to pin to: the GPU's NUMA node (limited to cpu_cores), or None for no pinning."""
        if numa_node is None or numa_node < 0 or not limits.numa_local:
            if limits.cpu_cores is None:
                return None
            return confinement.choose_cpus(self.allowed_cpus, cpu_cores=limits.cpu_cores)
        node_cpus = confinement.numa_node_cpus(numa_node, sys_node_dir=self.sys_node_dir)
        return confinement.choose_cpus(node_cpus, cpu_cores=limits.cpu_cores, allowed=self.allowed_cpus)

    def preexec_for(self, limits: ComputeLimits, numa_node: int | None) -> Callable[[], None] | None:
        """The spawner's preexec hook for the direct launcher (None under systemd-run or when nothing to do)."""
        if self.launcher is not LauncherKind.DIRECT:
            return None
        cpus = self.cpus_for(limits, numa_node)
        user = confinement.lookup_user(limits.user) if limits.user else None
        if not cpus and user is None:
            return None
        return confinement.make_preexec(cpus=cpus, user=user, euid=self.euid)

    def wrap_argv(self, *, instance_id: str, argv: Sequence[str], env: Mapping[str, str], limits: ComputeLimits,
                  partitions: Sequence[LogicalPartition], numa_node: int | None,
                  working_dir: str | None = None) -> list[str]:
        """The command to spawn: ``argv`` itself (direct) or a systemd-run transient unit around it."""
        if self.launcher is LauncherKind.DIRECT:
            return list(argv)
        if limits.user is not None:
            confinement.lookup_user(limits.user)  # fail early with a clear message
        return confinement.systemd_run_argv(
            unit_name=confinement.unit_name_for(instance_id), argv=argv, env=env,
            device_nodes=[f"/dev/dri/{p.render_node}" for p in partitions],
            cpus=self.cpus_for(limits, numa_node), memory_max_bytes=limits.host_memory_bytes,
            user=limits.user, working_dir=working_dir)

    @staticmethod
    def vram_budget(instance_id: str, limits: ComputeLimits, *, sized_bytes_per_rank: int, pids: Sequence[int],
                    partitions: Sequence[PartitionRef]) -> VramBudget:
        """The monitor's budget: the explicit cap, else what sizing reserved per rank."""
        budget = limits.memory_bytes if limits.memory_bytes is not None else sized_bytes_per_rank
        return VramBudget(instance_id, budget, frozenset(pids), tuple(partitions), limits.memory_policy,
                          limits.memory_tolerance_fraction)


def describe_limits(*, instance_id: str, limits: ComputeLimits, partition: LogicalPartition | None,
                    cu_mask: str | None, vram_used_bytes: int | None, vram_budget_bytes: int | None,
                    cpus: Sequence[int] | None) -> dict[str, Any]:
    """One instance's limits for /status and ``gpu-sharing status`` (JSON-ready)."""
    cus_granted: int | None = None
    spread: list[int] | None = None
    if partition is not None:
        if cu_mask:
            cus = mask_cus(cu_mask)
            cus_granted = len(cus)
            spread = xcc_spread(cus, partition.xcc_count)
        else:
            cus_granted = partition.cu_count
    return {
        "instance": instance_id,
        "partition": partition.id if partition is not None else None,
        "cus_granted": cus_granted,
        "cus_per_xcc": spread,
        "cu_mask": cu_mask,
        "vram_used_bytes": vram_used_bytes,
        "vram_budget_bytes": vram_budget_bytes,
        "memory_policy": limits.memory_policy.value,
        "cpus": confinement.format_cpulist(cpus) if cpus else None,
        "user": limits.user,
    }
