"""Seed-compatible Python API: a thin facade over the real layers (no second implementation).

    >>> from gpu_sharing import ROCmPartitioner, ModelSizingConfig, ModelScheduler
    >>> part = ROCmPartitioner(gpu_id=0, simulate=True, sim_state_dir="/tmp/gs-sim")
    >>> partitions = part.initialize("MI300X", [40, 40, 40, 40])   # -> QPX: 4 x 48 GiB
    >>> sizing = ModelSizingConfig("config/model_sizing_config.yaml")
    >>> ok, partition_id, error = ModelScheduler(part, sizing).schedule_model("meta-llama/Llama-3.1-8B-Instruct")

``ROCmPartitioner`` drives a PartitionBackend (simulated or real), ``ModelSizingConfig``
reads the seed catalog through gpu_sharing.config, ``ModelScheduler`` places models with
the same packing rules as the planner, ``ResourceIsolator``/``ComputeLimits`` are the
isolation layer's own classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from gpu_sharing.config.loader import load_sizing_catalog
from gpu_sharing.config.sizing_catalog import SizingEntry
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.backend import PartitionBackend
from gpu_sharing.hardware.catalog import GpuModelSpec, get_spec
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.isolation import ComputeLimits, ResourceIsolator

GB = 1e9
GIB = 1024**3


@dataclass(frozen=True)
class MemoryPartition:
    """One logical partition as the seed API reports it."""

    partition_id: str
    hip_index: int
    size_gb: float
    """Decimal GB, like the seed's sizes."""
    cu_count: int
    compute_mode: ComputePartitionMode
    memory_mode: MemoryPartitionMode

    @classmethod
    def from_logical(cls, p: LogicalPartition, c: ComputePartitionMode, m: MemoryPartitionMode) -> "MemoryPartition":
        return cls(p.id, p.hip_index, p.vram_total_bytes / GB, p.cu_count, c, m)


class ROCmPartitioner:
    """Partitions one GPU so that requested memory sizes (GB) fit, choosing a valid mode.

    ``initialize(gpu_model, sizes_gb)`` picks the mode with the most partitions such that
    each requested size gets its own partition; it says so (``self.notes``) when sizes
    cannot be met exactly (partitions are equal in size on AMD Instinct GPUs).
    """

    def __init__(self, gpu_id: int = 0, simulate: bool = False, *, backend: PartitionBackend | None = None,
                 sim_state_dir: str | Path | None = None):
        self.gpu_id = gpu_id
        self.notes: list[str] = []
        if backend is None:
            from gpu_sharing.backends.factory import make_backend_with_reason
            from gpu_sharing.config.schema import BackendKind

            backend, _ = make_backend_with_reason(BackendKind.SIMULATED if simulate else BackendKind.AUTO,
                                                  sim_state_dir=sim_state_dir)
        self.backend = backend

    def choose_mode(self, spec: GpuModelSpec, sizes_gb: list[float], memory: MemoryPartitionMode) -> ComputePartitionMode:
        need = len(sizes_gb)
        biggest = max(sizes_gb) * GB if sizes_gb else 0
        fitting = [c for c in spec.compute_modes() if spec.is_valid(c, memory)
                   and spec.partitions(c) >= need and spec.vram_per_partition_bytes(c) >= biggest]
        if not fitting:
            raise UserError(f"{spec.name}: no partition mode gives {need} partitions of at least {max(sizes_gb):g} GB "
                            f"(modes: {', '.join(f'{c.value} = {spec.partitions(c)} x {spec.vram_per_partition_bytes(c) / GB:.1f} GB' for c in spec.compute_modes())})")
        return min(fitting, key=lambda c: (spec.partitions(c), c.value))

    def initialize(self, gpu_model: str, sizes_gb: list[float]) -> list[MemoryPartition]:
        spec = get_spec(gpu_model)
        gpu = self.backend.inventory().gpu(self.gpu_id)
        if gpu.model != spec.name:
            raise UserError(f"GPU {self.gpu_id} is a {gpu.model}, not a {spec.name}")
        mode = self.choose_mode(spec, sizes_gb, gpu.memory_mode)
        size = spec.vram_per_partition_bytes(mode) / GB
        self.notes = [f"{spec.name} {mode.value}: {spec.partitions(mode)} partitions of {size:.1f} GB"]
        if any(abs(s - size) > 0.5 for s in sizes_gb):
            self.notes.append(f"requested {sizes_gb} GB cannot be met exactly: partitions are equal, "
                              f"each request gets a {size:.1f} GB partition")
        if gpu.compute_mode != mode:
            self.backend.set_compute_mode(self.gpu_id, mode)
        return self.partitions()

    def partitions(self) -> list[MemoryPartition]:
        g = self.backend.inventory().gpu(self.gpu_id)
        return [MemoryPartition.from_logical(p, g.compute_mode, g.memory_mode) for p in g.partitions]


@dataclass(frozen=True)
class ModelSizeInfo:
    model_id: str
    parameters: int
    memory_gb: float
    quantization: str | None
    recommended_partition_gb: float | None

    @classmethod
    def from_entry(cls, e: SizingEntry) -> "ModelSizeInfo":
        return cls(e.model_id, e.parameter_count, e.memory_gb, e.quantization, e.recommended_partition_gb)


class ModelSizingConfig:
    """The seed sizing catalog (config/model_sizing_config.yaml)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.catalog = load_sizing_catalog(self.path)

    def get(self, model_id: str) -> ModelSizeInfo | None:
        e = self.catalog.find(model_id)
        return ModelSizeInfo.from_entry(e) if e else None

    def models(self) -> list[ModelSizeInfo]:
        return [ModelSizeInfo.from_entry(e) for e in self.catalog.models]


class ModelStatus(str, Enum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class ModelInstance:
    model_id: str
    partition_id: str
    memory_gb: float
    status: ModelStatus = ModelStatus.SCHEDULED
    limits: ComputeLimits = field(default_factory=ComputeLimits)


class ModelScheduler:
    """Places models into the partitioner's partitions (best fit, packing allowed)."""

    def __init__(self, partitioner: ROCmPartitioner, sizing: ModelSizingConfig | None = None, headroom_fraction: float = 0.03):
        self.partitioner = partitioner
        self.sizing = sizing
        self.headroom_fraction = headroom_fraction
        self.instances: list[ModelInstance] = []

    def schedule_model(self, model_id: str, memory_gb: float | None = None,
                       limits: ComputeLimits | None = None) -> tuple[bool, str | None, str | None]:
        if memory_gb is None:
            info = self.sizing.get(model_id) if self.sizing else None
            if info is None:
                return False, None, f"no size for {model_id!r}: add it to the sizing catalog or pass memory_gb"
            memory_gb = info.memory_gb
        used: dict[str, float] = {}
        for inst in self.instances:
            used[inst.partition_id] = used.get(inst.partition_id, 0.0) + inst.memory_gb
        parts = self.partitioner.partitions()
        fits = [(p.size_gb * (1 - self.headroom_fraction) - used.get(p.partition_id, 0.0) - memory_gb, p)
                for p in parts]
        fits = [(slack, p) for slack, p in fits if slack >= 0]
        if not fits:
            largest = max((p.size_gb * (1 - self.headroom_fraction) - used.get(p.partition_id, 0.0) for p in parts),
                          default=0)
            return False, None, f"{model_id} needs {memory_gb:.1f} GB; the most free in one partition is {largest:.1f} GB"
        slack, best = min(fits, key=lambda t: (t[0], t[1].partition_id))
        self.instances.append(ModelInstance(model_id, best.partition_id, memory_gb, limits=limits or ComputeLimits()))
        return True, best.partition_id, None


__all__ = ["ROCmPartitioner", "ModelSizingConfig", "ModelSizeInfo", "ModelScheduler", "ModelInstance", "ModelStatus",
           "ResourceIsolator", "ComputeLimits", "ComputePartitionMode", "MemoryPartitionMode", "MemoryPartition"]
