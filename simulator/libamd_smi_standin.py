"""A stand-in for ROCm's C library ``libamd_smi.so`` under the REAL ``amdsmi`` Python package (PyPI).

Why: the fake ``simulator.fake_amdsmi`` module copies amdsmi's Python API by hand, so a test over it
can only show that our backend agrees with our copy. Loading the real wheel (``amdsmi_wrapper.py``
binds every C symbol at import, ``amdsmi_interface.py`` builds the dicts our backend reads) over this
stand-in makes the shapes the real ones: only the C calls below are simulated, answering from the
simulated node with the C signatures of amdsmi 7.0.2 (``amdsmi_wrapper.py``; status codes as
``AMDSMI_STATUS_*`` there).

Load it with :func:`load_real_amdsmi`: it patches ``ctypes.CDLL`` while the package is imported, so
``_libraries['libamd_smi.so']`` is this object. Python functions accept the ``argtypes``/``restype``
assignments the wrapper makes but not its conversions: arguments arrive as the interface built them
(``ctypes.byref(x)`` objects, arrays, structs, ints). A symbol not implemented here answers
NOT_SUPPORTED, like a library built without that feature.
"""

from __future__ import annotations

import ctypes
import importlib
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

from simulator.node import SimError, SimNode

SUCCESS, INVAL, NOT_SUPPORTED, NOT_FOUND = 0, 1, 2, 13
_STATUS = {"BUSY": 30, "NO_PERM": 10, "SETTING_UNAVAILABLE": 55, "NOT_SUPPORTED": 2, "INVAL": 1, "TIMEOUT": 8,
           "RESTART_FAILED": 54, "NOT_FOUND": 13}
_COMPUTE = {1: "SPX", 2: "DPX", 3: "TPX", 4: "QPX", 5: "CPX"}
_MEMORY = {1: "NPS1", 2: "NPS2", 4: "NPS4", 8: "NPS8"}


def _out(arg: Any) -> Any:
    """The object behind ``ctypes.byref(x)`` (or ``x`` itself when passed directly)."""
    return getattr(arg, "_obj", arg)


def _value(arg: Any) -> Any:
    return getattr(arg, "value", arg)


class LibAmdSmiStandIn:
    """The C functions our backend's calls reach, over one simulated node."""

    def __init__(self, state_dir: Path | str):
        self.node = SimNode.open(state_dir)
        self._functions: dict[str, Callable[..., int]] = {}

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._functions:
            impl = getattr(type(self), f"c_{name}", None)

            def fn(*args: Any, _impl=impl, _name=name) -> int:
                if _impl is None:
                    return NOT_SUPPORTED
                try:
                    return _impl(self, *args)
                except SimError as e:
                    return _STATUS.get(e.code, NOT_SUPPORTED)

            fn.__name__ = name
            self._functions[name] = fn
        return self._functions[name]

    # ---------------------------------------------------------------- handles
    def _parts(self) -> list[dict]:
        return self.node.partitions()

    def _part(self, handle: Any) -> dict:
        hip = (_value(handle) or 0) - 1
        for p in self._parts():
            if p["hip_index"] == hip:
                return p
        raise SimError("NOT_FOUND", f"no processor handle {hip + 1}")

    def _primary(self, handle: Any) -> dict:
        p = self._part(handle)
        if p["index"] != 0:
            raise SimError("NOT_SUPPORTED", "secondary partition")
        return next(g for g in self.node.state()["gpus"] if g["index"] == p["gpu"])

    def c_amdsmi_init(self, flags: Any) -> int:
        return SUCCESS

    def c_amdsmi_shut_down(self) -> int:
        return SUCCESS

    def c_amdsmi_get_socket_handles(self, count: Any, handles: Any) -> int:
        gpus = sorted({p["gpu"] for p in self._parts()})
        _out(count).value = len(gpus)
        if handles:  # the second call passes the array; the first a NULL pointer
            for i, g in enumerate(gpus):
                handles[i] = g + 1
        return SUCCESS

    def c_amdsmi_get_processor_handles(self, socket: Any, count: Any, handles: Any) -> int:
        gpu = (_value(socket) or 0) - 1
        mine = [p for p in self._parts() if p["gpu"] == gpu]
        _out(count).value = len(mine)
        if handles:
            for i, p in enumerate(mine):
                handles[i] = p["hip_index"] + 1
        return SUCCESS

    # ---------------------------------------------------------------- readings
    def c_amdsmi_get_gpu_device_bdf(self, handle: Any, bdf: Any) -> int:
        p = self._part(handle)
        domain, bus, rest = p["bdf"].split(":")
        device, function = rest.split(".")
        s = _out(bdf).struct_amdsmi_bdf_t
        s.domain_number, s.bus_number = int(domain, 16), int(bus, 16)
        s.device_number, s.function_number = int(device, 16), int(function, 16)
        return SUCCESS

    def c_amdsmi_get_gpu_asic_info(self, handle: Any, info: Any) -> int:
        p, spec, o = self._part(handle), self.node.spec, _out(info)
        o.market_name = spec.market_name.encode()
        o.vendor_id, o.device_id, o.num_of_compute_units = 0x1002, 0x74A1, p["cu_count"]
        o.vendor_name = b"Advanced Micro Devices Inc."
        o.target_graphics_version = int(spec.gfx_target.removeprefix("gfx"), 16)
        o.asic_serial = f"{0x5A3F8E21C0D47B00 + p['gpu']:016X}".encode()
        o.oam_id = p["gpu"]
        return SUCCESS

    def c_amdsmi_get_gpu_compute_partition(self, handle: Any, buf: Any, length: Any) -> int:
        g = self._primary(handle)
        if g.get("failing_reading"):
            return 43  # AMDSMI_STATUS_UNEXPECTED_DATA
        buf.value = g["compute_mode"].encode()
        return SUCCESS

    def c_amdsmi_get_gpu_memory_partition(self, handle: Any, buf: Any, length: Any) -> int:
        g = self._primary(handle)
        if g.get("failing_reading"):
            return 43
        buf.value = g["memory_mode"].encode()
        return SUCCESS

    def c_amdsmi_get_gpu_memory_partition_config(self, handle: Any, config: Any) -> int:
        g, o = self._primary(handle), _out(config)
        for mode in self.node.spec.memory_modes():
            setattr(o.partition_caps.nps_flags, f"{mode.value.lower()}_cap", 1)
        o.mp_mode = next(k for k, v in _MEMORY.items() if v == g["memory_mode"])
        return SUCCESS

    def c_amdsmi_get_xgmi_info(self, handle: Any, info: Any) -> int:
        g, o = self._primary(handle), _out(info)
        o.xgmi_hive_id, o.xgmi_node_id, o.index, o.xgmi_lanes = g["hive_id"], g["index"], g["index"], 16
        return SUCCESS

    def c_amdsmi_topo_get_numa_node_number(self, handle: Any, numa: Any) -> int:
        p = self._part(handle)
        _out(numa).value = next(g["numa_node"] for g in self.node.state()["gpus"] if g["index"] == p["gpu"])
        return SUCCESS

    def c_amdsmi_get_gpu_enumeration_info(self, handle: Any, info: Any) -> int:
        p, o = self._part(handle), _out(info)
        o.drm_render, o.drm_card = 128 + p["hip_index"], p["hip_index"]
        o.hsa_id, o.hip_id = p["hip_index"] + 2, p["hip_index"]
        o.hip_uuid = f"GPU-{p['hip_index']:016x}".encode()
        return SUCCESS

    def c_amdsmi_get_gpu_memory_total(self, handle: Any, mem_type: Any, total: Any) -> int:
        _out(total).value = self._part(handle)["vram_total_bytes"]
        return SUCCESS

    def c_amdsmi_get_gpu_memory_usage(self, handle: Any, mem_type: Any, used: Any) -> int:
        _out(used).value = self._part(handle)["vram_used_bytes"]
        return SUCCESS

    def c_amdsmi_get_gpu_process_list(self, handle: Any, count: Any, procs: Any) -> int:
        mine = self._part(handle)["processes"]
        room = _out(count).value
        for i, x in enumerate(mine[:room]):
            procs[i].name = x["name"][:31].encode()
            procs[i].pid = x["pid"]
            procs[i].mem = procs[i].memory_usage.vram_mem = x["vram_bytes"]
        _out(count).value = min(room, len(mine))
        return SUCCESS if len(mine) <= room else 39  # AMDSMI_STATUS_MORE_DATA

    # ---------------------------------------------------------------- changes
    def c_amdsmi_set_gpu_compute_partition(self, handle: Any, mode: Any) -> int:
        g = self._primary(handle)
        self.node.set_compute_mode(g["index"], _COMPUTE[int(_value(mode))])
        return SUCCESS

    def c_amdsmi_set_gpu_memory_partition(self, handle: Any, mode: Any) -> int:
        g = self._primary(handle)
        self.node.set_memory_mode(g["index"], _MEMORY[int(_value(mode))])
        return SUCCESS

    def c_amdsmi_gpu_driver_reload(self) -> int:
        self.node.reload_driver()  # 7.0-7.12 only (removed in ROCm 10: shared reference amd-smi-shapes.md)
        return SUCCESS


@contextmanager
def _cdll_returns(lib: LibAmdSmiStandIn) -> Iterator[None]:
    real = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if "amd_smi" in str(name):
            return lib
        return real(name, *args, **kwargs)

    ctypes.CDLL = cdll  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        ctypes.CDLL = real  # type: ignore[misc]


def load_real_amdsmi(state_dir: Path | str) -> ModuleType:
    """Import the real ``amdsmi`` package (fresh) with its C library answered by a stand-in over the node."""
    for name in [m for m in sys.modules if m == "amdsmi" or m.startswith("amdsmi.")]:
        del sys.modules[name]
    with _cdll_returns(LibAmdSmiStandIn(state_dir)):
        return importlib.import_module("amdsmi")
