"""The Reconciler's collaborators, each a small Protocol with its real implementation.

Why constructor injection: the Reconciler orchestrates; what it plans with, how it
sizes, how it builds an argv and where it keeps measured sizes are passed in, typed,
so a reader sees every dependency in one signature and a test replaces one by
passing another object, not by patching a module.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition
from gpu_sharing.planner.types import ModelDemand, Placement, Plan, PlannerPolicy, RunningInstance
from gpu_sharing.reconcile.cu_sharing import CuAssignment
from gpu_sharing.reconcile.desired import DesiredState
from gpu_sharing.runtime.supervisor import InstanceLaunch
from gpu_sharing.sizing.measured_store import MeasuredSizes, measured_key


class Planner(Protocol):
    """``gpu_sharing.planner.plan``."""

    def __call__(self, inventory: Inventory, demands: Sequence[ModelDemand], current: Sequence[RunningInstance],
                 policy: PlannerPolicy, /) -> Plan: ...


class DemandBuilder(Protocol):
    """``desired.desired_state``: the effective config at ``now`` -> demands, policy, problems, windows."""

    def __call__(self, config: Config, *, gpu_indices: Sequence[int], now: datetime, config_dir: Path | None,
                 measured: MeasuredSizes | None, replica_targets: Mapping[str, int] | None) -> DesiredState: ...


class LaunchBuilder(Protocol):
    """``launch.build_launch``: a placement on partitions of the (new) inventory -> what to spawn."""

    def __call__(self, placement: Placement, partitions: Sequence[LogicalPartition], port: int,
                 cu_mask: str | None, inventory: Inventory, /, *, config: Config, fingerprint: str,
                 config_dir: Path | None = None) -> InstanceLaunch: ...


class CuMaskPolicy(Protocol):
    """``cu_sharing.cu_masks_for``: HSA_CU_MASK per instance to start on a shared partition, given the
    running instances' masks; names running neighbours that must restart when a partition is rebalanced."""

    def __call__(self, plan: Plan, inventory: Inventory, config: Config,
                 running: Mapping[str, str | None] | None = None, /) -> CuAssignment: ...


class MeasuredStore(Protocol):
    """Measured VRAM per rank of READY instances: read before sizing, written after READY."""

    def load(self) -> MeasuredSizes | None: ...

    def version(self) -> object:
        """Changes whenever the stored sizes change (the Reconciler re-sizes only then)."""
        ...

    def record(self, model: ModelSettings, tp: int, bytes_per_rank: int) -> None: ...


class FileMeasuredStore:
    """``<state_dir>/measured_sizes.json`` through ``sizing.measured_store``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> MeasuredSizes:
        return MeasuredSizes.load(self.path)

    def version(self) -> object:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def record(self, model: ModelSettings, tp: int, bytes_per_rank: int) -> None:
        store = MeasuredSizes.load(self.path)
        store.record(measured_key(model, tp=tp), int(bytes_per_rank))
        store.save(self.path)
