"""SimulatedBackend: the PartitionBackend over the simulator's shared node state.

It maps the node's refusals (SimError codes) to BackendError exactly like the
amdsmi backend maps AmdSmiLibraryException codes, so the applier cannot tell
the difference (the contract suite checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gpu_sharing.config.schema import KfdModeSwitch, SimulatorSettings
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, ProgressFn
from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import GpuProcess, Inventory, LogicalPartition, PhysicalGpu, UnknownGpu
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from simulator.node import SimError, SimNode

_CODES = {c.value: c for c in BackendErrorCode} | {"RESTART_FAILED": BackendErrorCode.RESTART_FAILED}


def _to_backend_error(e: SimError, operation: str, gpu: int | None) -> BackendError:
    code = _CODES.get(e.code, BackendErrorCode.OTHER)
    return BackendError(operation, code, e.message if code != BackendErrorCode.OTHER else f"{e.code}: {e.message}", gpu)


class SimulatedBackend:
    name = "simulated"

    def __init__(self, node: SimNode, *, sleep: Callable[[float], None] | None = None):
        self.node = node
        self._sleep = sleep

    @classmethod
    def open(cls, state_dir: Path | str | None = None, settings: SimulatorSettings | None = None, *,
             kfd_mode_switch: KfdModeSwitch = KfdModeSwitch.STRICT) -> "SimulatedBackend":
        """The simulated node in state_dir; a new one is created from ``node.simulator`` settings (GPU model,
        count, driver reload time) and the kernel the config describes (``node.kfd_mode_switch``) when the
        directory holds none yet. An existing node keeps what it was created with (``gpu-sharing simulator
        set-fault --kfd-mode-switch`` changes its kernel)."""
        kfd = KfdModeSwitch(kfd_mode_switch).value
        if settings is None:
            return cls(SimNode.open_or_create(state_dir, kfd_mode_switch=kfd))
        return cls(SimNode.open_or_create(state_dir, gpu_model=settings.gpu_model, gpus=settings.gpus,
                                          reload_time_s=settings.driver_reload_time_s, kfd_mode_switch=kfd))

    def inventory(self) -> Inventory:
        try:
            code = self.node.take_fault("list")
            if code and code != "GARBAGE":
                raise SimError(code, "injected fault on list")
            state = self.node.state()
            parts = self.node.partitions(state)
        except SimError as e:
            raise _to_backend_error(e, "reading the GPU inventory", None) from None
        spec = get_spec(state["gpu_model"])
        gpus, unknown = [], []
        for g in state["gpus"]:
            if g.get("failing_reading"):  # the node's knob: this GPU's partition reading fails
                unknown.append(UnknownGpu(g["index"], f"0000:{g['bus']}:00.0",
                                          "simulated reading failed: AMDSMI_STATUS_UNEXPECTED_DATA"))
                continue
            mine = tuple(
                LogicalPartition(gpu=p["gpu"], index=p["index"], hip_index=p["hip_index"],
                                 render_node=p["render_node"], cu_count=p["cu_count"], xcc_count=p["xcc_count"],
                                 vram_total_bytes=p["vram_total_bytes"], vram_used_bytes=p["vram_used_bytes"],
                                 processes=tuple(GpuProcess(x["pid"], x["name"], x["vram_bytes"]) for x in p["processes"]))
                for p in parts if p["gpu"] == g["index"])
            gpus.append(PhysicalGpu(
                index=g["index"], bdf=f"0000:{g['bus']}:00.0", model=spec.name, hive_id=g["hive_id"],
                numa_node=g["numa_node"], compute_mode=ComputePartitionMode(g["compute_mode"]),
                memory_mode=MemoryPartitionMode(g["memory_mode"]), partitions=mine,
                pending_memory_mode=MemoryPartitionMode(g["pending_memory_mode"]) if g.get("pending_memory_mode") else None,
                memory_caps=tuple(spec.memory_modes())))
        return Inventory(tuple(gpus), tuple(unknown))

    def set_compute_mode(self, gpu: int, mode: ComputePartitionMode) -> None:
        try:
            self.node.set_compute_mode(gpu, ComputePartitionMode(mode).value)
        except SimError as e:
            raise _to_backend_error(e, f"setting compute partition {ComputePartitionMode(mode).value}", gpu) from None

    def set_memory_mode(self, gpu: int, mode: MemoryPartitionMode) -> None:
        try:
            self.node.set_memory_mode(gpu, MemoryPartitionMode(mode).value)
        except SimError as e:
            raise _to_backend_error(e, f"setting memory partition {MemoryPartitionMode(mode).value}", gpu) from None

    def reload_driver(self, progress: ProgressFn | None = None) -> None:
        try:
            if self._sleep is not None:
                self.node.reload_driver(progress, sleep=self._sleep)
            else:
                self.node.reload_driver(progress)
        except SimError as e:
            raise _to_backend_error(e, "reloading the amdgpu driver", None) from None
