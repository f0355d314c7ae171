"""Builders for planner tests: inventories and demands from plain numbers."""

from __future__ import annotations

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition, PhysicalGpu
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from gpu_sharing.planner.types import ModelDemand

GIB = 1024**3


def gpu(index: int, model: str = "MI300X", compute: str = "SPX", memory: str = "NPS1", hive: int = 1) -> PhysicalGpu:
    spec = get_spec(model)
    c = C(compute)
    n = spec.partitions(c)
    parts = tuple(LogicalPartition(index, k, index * 8 + k, f"renderD{128 + index * 8 + k}", spec.cus_per_partition(c),
                                   spec.xccs_per_partition(c), spec.vram_per_partition_bytes(c), 0) for k in range(n))
    return PhysicalGpu(index, f"0000:{index:02x}:00.0", spec.name, hive, 0, c, M(memory), parts)


def node(n: int = 8, model: str = "MI300X", compute: str = "SPX", memory: str = "NPS1") -> Inventory:
    return Inventory(tuple(gpu(i, model, compute, memory) for i in range(n)))


def demand(name: str, gb_tp1: float, replicas: int = 1, priority: int = 0, *, tps=(1, 2, 4, 8), share=None,
           heads: int = 64, gpus=None, fingerprint: str = "f1") -> ModelDemand:
    per_rank = {tp: int(gb_tp1 * GIB / tp + 1.5 * GIB) for tp in tps if heads % tp == 0}
    return ModelDemand(name, replicas, priority, per_rank, fingerprint, compute_share=share,
                       allowed_gpus=tuple(gpus) if gpus is not None else None, attention_heads=heads)
