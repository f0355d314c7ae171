"""A small recording PartitionBackend for applier-order tests, and plan/inventory builders.

Only what the order tests need: the simulated node (simulator/) is the faithful
fake used by the integration tests.
"""

from __future__ import annotations

from gpu_sharing.hardware.backend import BackendError, BackendErrorCode
from gpu_sharing.hardware.inventory import GpuProcess, Inventory, LogicalPartition, PartitionRef, PhysicalGpu
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from gpu_sharing.planner.types import GpuTarget, Placement, Plan, SolverInfo
from gpu_sharing.runtime.supervisor import InstanceLaunch

GIB = 1 << 30
PARTS = {C.SPX: 1, C.DPX: 2, C.QPX: 4, C.CPX: 8}


def gpu(index: int, mode: C = C.SPX, processes: dict[int, tuple[GpuProcess, ...]] | None = None) -> PhysicalGpu:
    n = PARTS[mode]
    parts = tuple(LogicalPartition(gpu=index, index=k, hip_index=index * n + k, render_node=f"renderD{128 + index * n + k}",
                                   cu_count=304 // n, xcc_count=8 // n, vram_total_bytes=192 * GIB // n,
                                   vram_used_bytes=0, processes=(processes or {}).get(k, ()))
                  for k in range(n))
    return PhysicalGpu(index=index, bdf=f"0000:{index:02x}:00.0", model="MI300X", hive_id=1, numa_node=0,
                       compute_mode=mode, memory_mode=M.NPS1, partitions=parts)


class RecordingBackend:
    """Keeps modes per GPU, records every call in order; set_compute_mode fails BUSY for gpus in busy."""

    name = "recording"

    def __init__(self, modes: dict[int, C], busy: set[int] | None = None):
        self.modes = dict(modes)
        self.busy = busy or set()
        self.calls: list[tuple] = []
        self.processes: dict[int, tuple[GpuProcess, ...]] = {}

    def inventory(self) -> Inventory:
        self.calls.append(("inventory",))
        return Inventory(gpus=tuple(gpu(i, m, {0: self.processes.get(i, ())}) for i, m in sorted(self.modes.items())))

    def set_compute_mode(self, g: int, mode: C) -> None:
        self.calls.append(("set_compute_mode", g, mode))
        if g in self.busy:
            raise BackendError(f"setting compute partition {mode.value}", BackendErrorCode.BUSY, "1 process", gpu=g)
        self.modes[g] = mode

    def set_memory_mode(self, g: int, mode: M) -> None:
        self.calls.append(("set_memory_mode", g, mode))

    def reload_driver(self, progress=None) -> None:
        self.calls.append(("reload_driver",))

    def mutating(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "inventory"]


def placement(iid: str, refs: tuple[tuple[int, int], ...], gib: int = 10) -> Placement:
    model, _, replica = iid.rpartition("-")
    return Placement(instance_id=iid, model=model, replica=int(replica),
                     partitions=tuple(PartitionRef(g, k) for g, k in refs), tp=len(refs),
                     memory_bytes_per_rank=gib * GIB, partition_bytes=192 * GIB)


def make_plan(*, to_start=(), to_stop=(), to_repartition=(), unchanged=()) -> Plan:
    return Plan(gpus=tuple(to_repartition), placements=tuple(to_start), to_start=tuple(to_start),
                to_stop=tuple(to_stop), to_repartition=tuple(to_repartition), unchanged=tuple(unchanged),
                unplaceable=(), actions=(), solver=SolverInfo("test", 0, 0, 0))


def target(g: int, mode: C, memory_changes: bool = False) -> GpuTarget:
    return GpuTarget(gpu=g, compute_mode=mode, memory_mode=M.NPS1, compute_changes=True, memory_changes=memory_changes)


def build_launch(p, parts, port, cu_mask, inventory=None) -> InstanceLaunch:
    return InstanceLaunch(instance_id=p.instance_id, model=p.model, replica=p.replica, fingerprint="fp",
                          served_names=(p.model,), partitions=tuple(str(r) for r in p.partitions),
                          hip_indices=tuple(x.hip_index for x in parts), memory_bytes_per_rank=p.memory_bytes_per_rank,
                          tp=p.tp, argv=("vllm", "serve", p.model), env=(), port=port, url=f"http://127.0.0.1:{port}")
