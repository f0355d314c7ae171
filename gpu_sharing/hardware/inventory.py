"""What a backend observes on a node: physical GPUs, their modes, logical partitions, processes.

Frozen values so the planner can hash and compare them; backends build a fresh
Inventory on every observation (handles change after any mode change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode


@dataclass(frozen=True, order=True)
class PartitionRef:
    """Names one logical partition: physical GPU index and partition index within it."""

    gpu: int
    index: int

    def __str__(self) -> str:
        return f"{self.gpu}.{self.index}"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    vram_bytes: int


@dataclass(frozen=True)
class LogicalPartition:
    """One logical GPU as ROCm enumerates it (one amdsmi processor handle)."""

    gpu: int
    index: int
    hip_index: int
    render_node: str
    """``renderD128``: the /dev/dri node for device confinement."""
    cu_count: int
    xcc_count: int
    vram_total_bytes: int
    vram_used_bytes: int
    processes: tuple[GpuProcess, ...] = ()

    @property
    def ref(self) -> PartitionRef:
        return PartitionRef(self.gpu, self.index)

    @property
    def id(self) -> str:
        return f"{self.gpu}.{self.index}"

@dataclass(frozen=True)
class PhysicalGpu:
    index: int
    bdf: str
    model: str
    """Catalog name (``MI300X``), or the market name when the catalog does not know it."""
    hive_id: int
    numa_node: int
    compute_mode: ComputePartitionMode
    memory_mode: MemoryPartitionMode
    partitions: tuple[LogicalPartition, ...]
    pending_memory_mode: MemoryPartitionMode | None = None
    """Set after ``amd-smi set -M`` until the driver is reloaded."""
    memory_caps: tuple[MemoryPartitionMode, ...] = ()

    @property
    def processes(self) -> tuple[GpuProcess, ...]:
        return tuple(p for part in self.partitions for p in part.processes)


@dataclass(frozen=True)
class UnknownGpu:
    """A GPU whose readings failed (amd-smi printed "N/A", an amdsmi call raised): nothing is planned,
    started, stopped or repartitioned on it until it reads again; what runs there keeps running."""
    index: int
    bdf: str
    reason: str


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[PhysicalGpu, ...] = field(default_factory=tuple)
    unknown: tuple[UnknownGpu, ...] = ()
    """GPUs left out of ``gpus`` because a reading failed (see UnknownGpu)."""

    def gpu(self, index: int) -> PhysicalGpu:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(f"no GPU {index} on this node (GPUs: {', '.join(str(g.index) for g in self.gpus)})")

    def partition(self, ref: PartitionRef) -> LogicalPartition:
        for p in self.gpu(ref.gpu).partitions:
            if p.index == ref.index:
                return p
        raise KeyError(f"no partition {ref} on this node")

    def hive(self, hive_id: int) -> tuple[PhysicalGpu, ...]:
        return tuple(g for g in self.gpus if g.hive_id == hive_id)


def describe_processes(gpu: PhysicalGpu) -> str:
    """``2 processes on partition 3.1 (pid 4411 vllm, pid 4412 vllm)``, or "" when the GPU is idle.

    Backends use it to turn a bare BUSY from amd-smi into a message an operator can act on.
    """
    procs = [(p.id, x) for p in gpu.partitions for x in p.processes]
    if not procs:
        return ""
    where = ", ".join(sorted({pid for pid, _ in procs}))
    names = ", ".join(f"pid {x.pid} {x.name}" for _, x in procs[:3])
    return f"{len(procs)} process{'es' if len(procs) != 1 else ''} on partition {where} ({names})"
