"""Per-instance VRAM budgets: decide who is over budget and who does not belong.

Why a monitor: under ``compute_partition_mem_alloc_mode=ALL`` (and whenever
several instances share a partition) nothing in the driver stops one vLLM
from growing into another's memory; the vLLM flags only set its intent.  So
the daemon compares per-process VRAM (amdsmi process list, already in the
Inventory) with each instance's per-rank budget and applies the configured
policy.  Processes on our partitions that belong to no instance are
*foreign*: reported (status, metric) but never killed; they may be a user's
legitimate job.

``VramMonitor.check`` is pure (values in, decisions out); the daemon calls it
on its schedule with a fresh Inventory and acts on the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from gpu_sharing.hardware.inventory import Inventory, PartitionRef


class MemoryAction(str, Enum):
    WARN = "warn"
    RESTART = "restart"
    STOP = "stop"


@dataclass(frozen=True)
class VramBudget:
    """One instance's budget: bytes per rank, its pids, and the partitions it was placed on."""

    instance_id: str
    budget_bytes_per_rank: int
    pids: frozenset[int]
    partitions: tuple[PartitionRef, ...] = ()
    policy: MemoryAction = MemoryAction.WARN
    tolerance_fraction: float = 0.05


@dataclass(frozen=True)
class VramViolation:
    instance_id: str
    partition: str
    """``gpu.index`` of the worst rank."""
    used_bytes: int
    budget_bytes: int
    limit_bytes: int
    """Budget plus tolerance: crossing this is the violation."""
    action: MemoryAction
    message: str


@dataclass(frozen=True)
class ForeignProcess:
    partition: str
    pid: int
    name: str
    vram_bytes: int


@dataclass(frozen=True)
class VramReport:
    violations: tuple[VramViolation, ...]
    foreign: tuple[ForeignProcess, ...]
    used_bytes: Mapping[str, int]
    """Instance id -> VRAM of its largest rank (what the budget is compared with)."""


class VramMonitor:
    """Pure decision logic; holds no state besides the partitions it manages."""

    def __init__(self, managed_partitions: Iterable[PartitionRef] | None = None):
        self.managed = frozenset(managed_partitions) if managed_partitions is not None else None

    def check(self, budgets: Iterable[VramBudget], inventory: Inventory) -> VramReport:
        budgets = list(budgets)
        owner = {pid: b.instance_id for b in budgets for pid in b.pids}
        placed = {ref for b in budgets for ref in b.partitions}
        # Per instance, per partition: summed VRAM of its pids there (one rank per partition).
        usage: dict[str, dict[str, int]] = {b.instance_id: {} for b in budgets}
        foreign: list[ForeignProcess] = []
        for gpu in inventory.gpus:
            for part in gpu.partitions:
                managed = part.ref in placed if self.managed is None else part.ref in self.managed
                for proc in part.processes:
                    iid = owner.get(proc.pid)
                    if iid is not None:
                        usage[iid][part.id] = usage[iid].get(part.id, 0) + proc.vram_bytes
                    elif managed:
                        foreign.append(ForeignProcess(part.id, proc.pid, proc.name, proc.vram_bytes))
        violations: list[VramViolation] = []
        used: dict[str, int] = {}
        for b in budgets:
            per_part = usage[b.instance_id]
            if not per_part:
                used[b.instance_id] = 0
                continue
            worst_part, worst = max(per_part.items(), key=lambda kv: (kv[1], kv[0]))
            used[b.instance_id] = worst
            limit = int(b.budget_bytes_per_rank * (1 + b.tolerance_fraction))
            if worst > limit:
                over = worst - b.budget_bytes_per_rank
                violations.append(VramViolation(
                    b.instance_id, worst_part, worst, b.budget_bytes_per_rank, limit, b.policy,
                    f"instance {b.instance_id} uses {_gib(worst)} VRAM on partition {worst_part}, "
                    f"{_gib(over)} over its budget of {_gib(b.budget_bytes_per_rank)} per rank "
                    f"(tolerance {b.tolerance_fraction:.0%}); policy: {b.policy.value}"))
        return VramReport(tuple(violations), tuple(sorted(foreign, key=lambda f: (f.partition, f.pid))), used)


class VramWatch:
    """The thin runner: observe, decide, count, hand violations to the daemon's policy callback.

    Counters are what the metrics layer exports:
    ``gpu_sharing_vram_violations_total{instance,action}`` <- ``violations_total``,
    ``gpu_sharing_foreign_processes`` <- ``len(last.foreign)``.
    The callback (restart/stop through the supervisor, or just a log line for
    warn) is the daemon's; an exception in it is recorded, not raised, so one
    bad instance does not stop monitoring of the others.
    """

    def __init__(self, *, inventory: Callable[[], Inventory], budgets: Callable[[], Iterable[VramBudget]],
                 act: Callable[[VramViolation], None], monitor: VramMonitor | None = None):
        self._inventory = inventory
        self._budgets = budgets
        self._act = act
        self.monitor = monitor or VramMonitor()
        self.violations_total: dict[tuple[str, str], int] = {}
        self.last: VramReport | None = None
        self.errors: list[str] = []

    def run_once(self) -> VramReport:
        report = self.monitor.check(list(self._budgets()), self._inventory())
        for v in report.violations:
            key = (v.instance_id, v.action.value)
            self.violations_total[key] = self.violations_total.get(key, 0) + 1
            try:
                self._act(v)
            except Exception as e:  # keep monitoring; the daemon logs self.errors
                self.errors.append(f"{v.instance_id}: {v.action.value} failed: {e!r}")
        self.last = report
        return report


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
