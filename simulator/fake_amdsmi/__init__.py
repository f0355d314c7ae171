"""A fake ``amdsmi`` module (7.0.2 API shape) over the simulated node.

Same function names, enums, return dict keys, units and ``AmdSmiLibraryException``
codes and messages as the PyPI ``amdsmi`` 7.0.2 package (amdsmi_interface.py,
amdsmi_wrapper.py, amdsmi_exception.py), so gpu_sharing.backends.amdsmi_backend runs
on it unchanged. The node comes from ``configure(state_dir)`` or $GPU_SHARING_SIM_STATE.
Handles are invalidated by any partition change (``generation``), like real handles.
"""

from __future__ import annotations

import ctypes
import os
from enum import IntEnum
from pathlib import Path

from simulator.fake_amdsmi.exceptions import (AmdSmiException, AmdSmiLibraryException, AmdSmiParameterException,
                                              AmdSmiRetryException, AmdSmiTimeoutException, STATUS)
from simulator.node import SimError, SimNode, default_state_dir
from simulator.node_facts import knob

__version__ = "7.0.2"  # the wheel whose API shape this fake copies; the node's reported wheel is a knob

_state = {"dir": None, "initialized": False}


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8
    INIT_AMD_APUS = 3


class AmdSmiComputePartitionType(IntEnum):
    INVALID = 0
    SPX = 1
    DPX = 2
    TPX = 3
    QPX = 4
    CPX = 5


class AmdSmiMemoryPartitionType(IntEnum):
    UNKNOWN = 0
    NPS1 = 1
    NPS2 = 2
    NPS4 = 4
    NPS8 = 8


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class amdsmi_processor_handle(ctypes.c_void_p):  # noqa: N801 - the wrapper's own name
    """Like amdsmi_wrapper.amdsmi_processor_handle; we remember the node generation it came from."""


def configure(state_dir: str | Path | None) -> None:
    _state["dir"] = Path(state_dir) if state_dir else None


def _node() -> SimNode:
    d = _state["dir"] or (Path(os.environ["GPU_SHARING_SIM_STATE"]) if os.environ.get("GPU_SHARING_SIM_STATE")
                          else default_state_dir())
    try:
        return SimNode.open(d)
    except FileNotFoundError:
        raise AmdSmiLibraryException(STATUS["DRIVER_NOT_LOADED"]) from None


def _raise(e: SimError):
    if e.code == "TIMEOUT":
        raise AmdSmiTimeoutException()
    raise AmdSmiLibraryException(STATUS.get(e.code, STATUS["UNKNOWN_ERROR"]))


def amdsmi_init(flag=AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
    if not isinstance(flag, AmdSmiInitFlags):
        raise AmdSmiParameterException(flag, AmdSmiInitFlags)
    _node()
    _state["initialized"] = True


def amdsmi_shut_down() -> None:
    _state["initialized"] = False


def _check_init() -> None:
    if not _state["initialized"]:
        raise AmdSmiLibraryException(STATUS["NOT_INIT"])


def amdsmi_get_processor_handles() -> list:
    _check_init()
    node = _node()
    fault = node.peek_fault("list")
    if fault and fault != "GARBAGE":  # GARBAGE is the CLI face's fault: it prints invalid JSON
        node.take_fault("list")
        _raise(SimError(fault, "injected"))
    gen = node.state()["generation"]
    out = []
    for p in node.partitions():
        h = amdsmi_processor_handle((gen << 16) | (p["hip_index"] + 1))
        out.append(h)
    return out


def _part(h) -> tuple[SimNode, dict]:
    _check_init()
    if not isinstance(h, amdsmi_processor_handle):
        raise AmdSmiParameterException(h, amdsmi_processor_handle)
    node = _node()
    st = node.state()
    gen, idx = (h.value or 0) >> 16, ((h.value or 0) & 0xFFFF) - 1
    if gen != st["generation"]:
        raise AmdSmiLibraryException(STATUS["NOT_FOUND"])  # stale handle: partitions changed since enumeration
    for p in node.partitions(st):
        if p["hip_index"] == idx:
            return node, p
    raise AmdSmiLibraryException(STATUS["NOT_FOUND"])


def _primary(node: SimNode, p: dict) -> dict:
    if p["index"] != 0:
        raise AmdSmiLibraryException(STATUS["NOT_SUPPORTED"])
    g = next(g for g in node.state()["gpus"] if g["index"] == p["gpu"])
    if g.get("failing_reading"):  # knob: the partition reading fails (the CLI then prints "N/A")
        raise AmdSmiLibraryException(STATUS["UNEXPECTED_DATA"])
    return g


def amdsmi_get_gpu_device_bdf(h) -> str:
    return _part(h)[1]["bdf"]


def amdsmi_get_gpu_device_uuid(h) -> str:
    p = _part(h)[1]
    return f"{p['hip_index']:02x}ff74a1-0000-1000-8039-6f7e5a1c2b{p['gpu']:02x}"


def amdsmi_get_gpu_enumeration_info(h) -> dict:
    p = _part(h)[1]
    return {"drm_render": 128 + p["hip_index"], "drm_card": p["hip_index"], "hsa_id": p["hip_index"] + 2,
            "hip_id": p["hip_index"], "hip_uuid": f"GPU-{p['gpu']:02x}{p['index']:02x}3f8e21c0d47b19"}


def amdsmi_get_gpu_kfd_info(h) -> dict:
    p = _part(h)[1]
    return {"kfd_id": 18421 + p["hip_index"], "node_id": p["hip_index"] + 2, "current_partition_id": p["index"]}


def amdsmi_get_lib_version() -> dict:
    """amdsmi_interface.py 7.0.2: {"major", "minor", "release", "build"} of libamd_smi.so (26.x numbering)."""
    parts = (str(knob(_node().state(), "version.amdsmi_lib")).split(".") + ["0", "0"])[:3]
    return {"major": int(parts[0]), "minor": int(parts[1]), "release": int(parts[2]), "build": ""}


def amdsmi_get_rocm_version() -> tuple[bool, str]:
    """amdsmi_interface.py 7.0.2: (True, "7.2.0") from librocm-core, or (False, "Could not find librocm-core.so")."""
    rocm = knob(_node().state(), "version.rocm")
    return (True, str(rocm)) if rocm else (False, "Could not find librocm-core.so")


def amdsmi_get_gpu_driver_info(h) -> dict:
    """{"driver_name", "driver_version", "driver_date"}: amd-smi version prints driver_version as "amdgpu version"."""
    node, _p = _part(h)
    st = node.state()
    return {"driver_name": "amdgpu", "driver_version": str(knob(st, "version.amdgpu") or knob(st, "version.kernel")),
            "driver_date": "2015/01/01 00:00"}


def amdsmi_get_gpu_asic_info(h) -> dict:
    node, p = _part(h)
    spec = node.spec
    st = node.state()
    cus = knob(st, "device.cu_per_partition") or p["cu_count"]
    return {"market_name": knob(st, "device.market_name") or spec.market_name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc.",
            "subvendor_id": "0x1002", "device_id": "0x74a1", "rev_id": "0x00",
            "asic_serial": f"0x{0x5A3F8E21C0D47B00 + p['gpu']:016X}" if p["index"] == 0 else "N/A",
            "oam_id": p["gpu"], "num_compute_units": cus, "target_graphics_version": spec.gfx_target,
            "subsystem_id": "0x74a1"}


def amdsmi_get_gpu_compute_partition(h) -> str:
    node, p = _part(h)
    return _primary(node, p)["compute_mode"]


def amdsmi_get_gpu_memory_partition(h) -> str:
    node, p = _part(h)
    g = _primary(node, p)
    return knob(node.state(), "device.memory_mode_of_gpu").get(str(g["index"]), g["memory_mode"])


def amdsmi_get_gpu_memory_partition_config(h) -> dict:
    node, p = _part(h)
    g = _primary(node, p)
    caps = knob(node.state(), "device.memory_caps") or [m.value for m in node.spec.memory_modes()]
    return {"partition_caps": list(caps), "mp_mode": g["memory_mode"],
            "num_numa_ranges": "N/A", "numa_range": "N/A"}


def amdsmi_get_gpu_vram_usage(h) -> dict:
    p = _part(h)[1]
    return {"vram_total": p["vram_total_bytes"] // 1048576, "vram_used": p["vram_used_bytes"] // 1048576}


def amdsmi_get_gpu_memory_total(h, mem_type) -> int:
    if not isinstance(mem_type, AmdSmiMemoryType):
        raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
    node, p = _part(h)
    vram = knob(node.state(), "device.vram_per_partition_bytes") or p["vram_total_bytes"]
    return int(vram) if mem_type != AmdSmiMemoryType.GTT else 128 * 2**30


def amdsmi_get_gpu_memory_usage(h, mem_type) -> int:
    if not isinstance(mem_type, AmdSmiMemoryType):
        raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
    p = _part(h)[1]
    return p["vram_used_bytes"] if mem_type != AmdSmiMemoryType.GTT else 0


def amdsmi_get_gpu_process_list(h) -> list:
    node, p = _part(h)
    fault = node.take_fault("process")
    if fault:
        _raise(SimError(fault, "injected"))
    return [{"name": x["name"] or "N/A", "pid": x["pid"], "mem": x["vram_bytes"],
             "engine_usage": {"gfx": 0, "enc": 0},
             "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": x["vram_bytes"]}, "cu_occupancy": "N/A"}
            for x in p["processes"]]


def amdsmi_topo_get_numa_node_number(h) -> int:
    node, p = _part(h)
    return next(g for g in node.state()["gpus"] if g["index"] == p["gpu"])["numa_node"]


def amdsmi_get_xgmi_info(h) -> dict:
    node, p = _part(h)
    g = next(g for g in node.state()["gpus"] if g["index"] == p["gpu"])
    return {"xgmi_lanes": 16, "xgmi_hive_id": g["hive_id"], "xgmi_node_id": g["index"], "index": g["index"]}


def amdsmi_set_gpu_compute_partition(h, compute_partition) -> None:
    if not isinstance(compute_partition, AmdSmiComputePartitionType):
        raise AmdSmiParameterException(compute_partition, AmdSmiComputePartitionType)
    node, p = _part(h)
    _primary(node, p)
    try:
        node.set_compute_mode(p["gpu"], compute_partition.name)
    except SimError as e:
        _raise(e)


def amdsmi_set_gpu_memory_partition(h, memory_partition) -> None:
    if not isinstance(memory_partition, AmdSmiMemoryPartitionType):
        raise AmdSmiParameterException(memory_partition, AmdSmiMemoryPartitionType)
    node, p = _part(h)
    _primary(node, p)
    try:
        node.set_memory_mode(p["gpu"], memory_partition.name)
    except SimError as e:
        _raise(e)


amdsmi_set_gpu_memory_partition_mode = amdsmi_set_gpu_memory_partition


def amdsmi_gpu_driver_reload() -> None:
    _check_init()
    try:
        _node().reload_driver()
    except SimError as e:
        if e.code == "RESTART_FAILED":
            raise AmdSmiLibraryException(STATUS["AMDGPU_RESTART_ERR"]) from None
        _raise(e)
