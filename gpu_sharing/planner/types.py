"""Inputs and outputs of the planner: demands, running instances, policy, and the frozen Plan.

The planner does not size models: callers pass each demand's per-rank memory for
every tensor-parallel degree it may use (from gpu_sharing.sizing), so the planner
stays a pure function over numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode


@dataclass(frozen=True)
class ModelDemand:
    """What the config asks for one model (after sizing)."""

    name: str
    replicas: int
    priority: int
    bytes_per_rank_by_tp: Mapping[int, int]
    """tp degree -> memory per rank (weights/tp + KV + overhead). Keys are the allowed tp values."""
    fingerprint: str
    """Hash of everything that requires a restart when changed (source, options, limits)."""
    compute_share: float | None = None
    min_partition_bytes: int = 0
    """e.g. the catalog's recommended_partition_gb."""
    allowed_gpus: tuple[int, ...] | None = None
    attention_heads: int | None = None
    """tp must divide this (when known)."""
    cu_count: int | None = None
    """``limits.cu_count``: a whole CU count each rank takes on its partition (the launcher's int
    request, isolation/cu_masks.resolve_cu_counts); set instead of ``compute_share``."""

    def __post_init__(self) -> None:
        if self.compute_share is not None:  # an int share would read as a CU count (cu_request)
            object.__setattr__(self, "compute_share", float(self.compute_share))

    @property
    def cu_request(self) -> int | float | None:
        """What the launcher's CU rule takes (isolation/cu_masks.CuRequest): the CU count (int),
        else the share (float), else None. problem.cu_cost and packing.Slot.fits read it."""
        return self.cu_count if self.cu_count is not None else self.compute_share

    def instance_id(self, replica: int) -> str:
        return f"{self.name}-{replica}"


@dataclass(frozen=True)
class RunningInstance:
    """An instance that runs now (observed by the reconciler)."""

    instance_id: str
    model: str
    replica: int
    fingerprint: str
    partitions: tuple[PartitionRef, ...]
    memory_bytes_per_rank: int


@dataclass(frozen=True)
class GpuPolicy:
    """Per-GPU constraints from the config."""

    gpu: int
    compute_mode: ComputePartitionMode | None = None
    """Pinned mode, or None for auto."""
    memory_mode: MemoryPartitionMode | None = None


class PreemptPolicy(str, Enum):
    """When the planner may stop or move a running instance of an unchanged model."""

    STRICTLY_HIGHER_PRIORITY = "strictly_higher_priority"
    """Only for a plan that places more priority among replicas of strictly higher priority
    than every instance it stops (its drain included)."""
    NEVER = "never"
    """Never: running instances of unchanged models stay; newcomers take what room is left."""
    ANY_GAIN = "any_gain"
    """For any gain in placed priority (the sum of priority + 1), whoever gains."""


@dataclass(frozen=True)
class PlannerPolicy:
    gpus: tuple[GpuPolicy, ...] = ()
    allow_driver_reload: bool = False
    headroom_fraction: float = 0.03
    spread_replicas: bool = True
    time_budget_s: float = 2.0
    seed: int = 0
    prefer_local_tp: bool = False
    """Operator policy (``placement.prefer_local_tp``): keep the fast pass's rules (smallest tp
    that fits, one GPU per model one GPU can hold); the proof is then against those rules."""
    preempt: PreemptPolicy = PreemptPolicy.STRICTLY_HIGHER_PRIORITY
    repartition_drains_node: bool = False
    """True where a compute-mode change is blocked by any GPU process on the node (no device
    cgroups): every running instance is stopped when any GPU changes mode, and counted."""


class ActionKind(str, Enum):
    START = "start"
    STOP = "stop"
    REPARTITION = "repartition"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class GpuTarget:
    gpu: int
    compute_mode: ComputePartitionMode
    memory_mode: MemoryPartitionMode
    compute_changes: bool = False
    memory_changes: bool = False


@dataclass(frozen=True)
class Placement:
    instance_id: str
    model: str
    replica: int
    partitions: tuple[PartitionRef, ...]
    """One partition per tp rank; all on one GPU or one hive."""
    tp: int
    memory_bytes_per_rank: int
    partition_bytes: int
    """Total VRAM of each partition in the target mode."""
    compute_share: float | None = None
    compute_units: int = 0
    """CUs this instance gets over all its ranks: its share of each partition's CUs
    (isolation/cu_masks.py's rule: floor(share x CUs), or an equal split of what the
    explicit shares leave among co-tenants without one)."""

    @property
    def gpu(self) -> int:
        return self.partitions[0].gpu

    @property
    def memory_fraction(self) -> float:
        return self.memory_bytes_per_rank / self.partition_bytes if self.partition_bytes else 1.0


@dataclass(frozen=True)
class Unplaceable:
    model: str
    replica: int
    reason: str


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: str
    """instance id, or ``gpu N``."""
    detail: str = ""


@dataclass(frozen=True)
class SolverInfo:
    name: str
    """greedy (its plan proven optimal or within the gap), layout-search, surrogate-knapsack,
    scip-configurations or cp-sat."""
    objective: float
    bound: float
    gap: float
    """(bound - objective) / bound, 0 when proven optimal."""
    wall_time_s: float = 0.0
    status: str = ""


@dataclass(frozen=True)
class Plan:
    gpus: tuple[GpuTarget, ...]
    placements: tuple[Placement, ...]
    to_start: tuple[Placement, ...]
    to_stop: tuple[str, ...]
    """instance ids."""
    to_repartition: tuple[GpuTarget, ...]
    unchanged: tuple[str, ...]
    unplaceable: tuple[Unplaceable, ...]
    actions: tuple[Action, ...]
    solver: SolverInfo
    needs_driver_reload: bool = False
    warnings: tuple[str, ...] = field(default=())
    drain_required: bool = False
    """A compute-mode change needs every GPU process on the node stopped
    (PlannerPolicy.repartition_drains_node) and some instance runs."""
    drained: tuple[str, ...] = ()
    """Running instances the drain stops that the plan would otherwise keep (restarted after)."""
    disruption: int = 0
    """Running instances this plan stops or moves, the drain included."""

    @property
    def has_changes(self) -> bool:
        return bool(self.to_start or self.to_stop or self.to_repartition)
