"""AmdSmiBackend: the real code path through the ``amdsmi`` Python library (ROCm 7.x API).

Imported lazily: the PyPI wheel loads ROCm's libamd_smi.so at import and raises
KeyError('libamd_smi.so') without it. Tests inject the simulator's fake module
(``amdsmi_module=``) and run this class unchanged. Handles die on any partition
change, so every call sequence starts with shut_down + init + enumerate.
Logical handles are grouped into physical GPUs by the BDF's domain:bus:device;
only the primary partition (function 0) reports and changes modes.

Real-library behaviour handled (shared reference real-stack-findings.md):
- ``amdsmi_wrapper.py`` resolves every C symbol at import, so a wheel newer than the installed
  libamd_smi.so raises ``AttributeError`` (undefined symbol): reported as UNAVAILABLE with the reason,
  so ``auto`` falls back to the amd-smi CLI instead of crashing start-up;
- one failing reading (e.g. a partition query during a switch) makes only that GPU an ``UnknownGpu``;
- every call runs under a timeout (``timeout_s``; the driver reload under ``reload_timeout_s``): a
  library call that hangs leaves its thread behind but not the daemon.
"""

from __future__ import annotations

import concurrent.futures
import functools
from types import ModuleType
from typing import Any, Callable, TypeVar

from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, ProgressFn
from gpu_sharing.hardware.catalog import spec_from_market_name
from gpu_sharing.hardware.inventory import (GpuProcess, Inventory, LogicalPartition, PhysicalGpu, UnknownGpu,
                                            describe_processes)
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

_CODE = {30: BackendErrorCode.BUSY, 10: BackendErrorCode.NO_PERM, 55: BackendErrorCode.SETTING_UNAVAILABLE,
         2: BackendErrorCode.NOT_SUPPORTED, 1: BackendErrorCode.INVAL, 8: BackendErrorCode.TIMEOUT,
         54: BackendErrorCode.RESTART_FAILED}


T = TypeVar("T")


def _bounded(timeout_attr: str):
    """Run the method in a helper thread and give up after ``self.<timeout_attr>`` seconds (TIMEOUT)."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def call(self, *args, **kwargs) -> T:
            timeout_s = getattr(self, timeout_attr)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="amdsmi")
            try:
                return pool.submit(fn, self, *args, **kwargs).result(timeout=timeout_s)
            except concurrent.futures.TimeoutError:
                gpu = args[0] if args and isinstance(args[0], int) else None
                raise BackendError(f"amdsmi {fn.__name__}", BackendErrorCode.TIMEOUT,
                                   f"no answer from libamd_smi within {timeout_s:g} s", gpu) from None
            finally:
                pool.shutdown(wait=False)
        return call
    return wrap


class AmdSmiBackend:
    name = "amdsmi"

    def __init__(self, amdsmi_module: ModuleType | None = None, *, timeout_s: float = 60.0,
                 reload_timeout_s: float = 600.0):
        if amdsmi_module is None:
            try:
                import amdsmi as amdsmi_module  # noqa: PLC0415 - lazy: the wheel needs libamd_smi.so at import
            except AttributeError as e:  # amdsmi_wrapper binds every symbol at import
                raise BackendError("loading the amdsmi library", BackendErrorCode.UNAVAILABLE,
                                   f"the amdsmi Python package does not match the installed libamd_smi.so "
                                   f"({e}); install the amdsmi wheel of your ROCm release") from None
            except (ImportError, KeyError, OSError) as e:
                raise BackendError("loading the amdsmi library", BackendErrorCode.UNAVAILABLE,
                                   f"{e!r}; install ROCm's amd-smi-lib (libamd_smi.so)") from None
        self.smi = amdsmi_module
        self.timeout_s = timeout_s
        self.reload_timeout_s = reload_timeout_s

    # ------------------------------------------------------------------ plumbing
    def _err(self, e: Exception, operation: str, gpu: int | None) -> BackendError:
        code = getattr(e, "err_code", None)
        info = getattr(e, "err_info", "") or str(e)
        return BackendError(operation, _CODE.get(code, BackendErrorCode.OTHER), info, gpu)

    def _handles(self) -> list[Any]:
        self.smi.amdsmi_shut_down()
        self.smi.amdsmi_init(self.smi.AmdSmiInitFlags.INIT_AMD_GPUS)
        return list(self.smi.amdsmi_get_processor_handles())

    def _call(self, operation: str, gpu: int | None, fn, *args):
        try:
            return fn(*args)
        except self.smi.AmdSmiException as e:
            raise self._err(e, operation, gpu) from None

    # ------------------------------------------------------------------ observe
    @_bounded("timeout_s")
    def inventory(self) -> Inventory:
        handles = self._call("enumerating GPUs", None, self._handles)
        groups: dict[str, list[tuple[Any, str]]] = {}
        for h in handles:
            bdf = self._call("reading a GPU's BDF", None, self.smi.amdsmi_get_gpu_device_bdf, h)
            groups.setdefault(bdf.rsplit(".", 1)[0], []).append((h, bdf))
        gpus, unknown = [], []
        for index, (_key, members) in enumerate(sorted(groups.items())):
            members.sort(key=lambda m: int(m[1].rsplit(".", 1)[1], 16))
            try:
                gpus.append(self._physical(index, members))
            except (BackendError, ValueError, KeyError, TypeError) as e:  # one failing reading: this GPU only
                unknown.append(UnknownGpu(index, members[0][1], f"amdsmi reading failed: {e}"))
        return Inventory(tuple(gpus), tuple(unknown))

    def _physical(self, index: int, members: list[tuple[Any, str]]) -> PhysicalGpu:
        smi = self.smi
        primary = members[0][0]
        op = "reading GPU state"
        asic = self._call(op, index, smi.amdsmi_get_gpu_asic_info, primary)
        spec = spec_from_market_name(str(asic.get("market_name", "")))
        compute = ComputePartitionMode(self._call(op, index, smi.amdsmi_get_gpu_compute_partition, primary))
        memory = MemoryPartitionMode(self._call(op, index, smi.amdsmi_get_gpu_memory_partition, primary))
        caps = self._call(op, index, smi.amdsmi_get_gpu_memory_partition_config, primary).get("partition_caps", [])
        xgmi = self._call(op, index, smi.amdsmi_get_xgmi_info, primary)
        numa = self._call(op, index, smi.amdsmi_topo_get_numa_node_number, primary)
        parts = []
        for k, (h, _bdf) in enumerate(members):
            enum = self._call(op, index, smi.amdsmi_get_gpu_enumeration_info, h)
            vram_total = self._call(op, index, smi.amdsmi_get_gpu_memory_total, h, smi.AmdSmiMemoryType.VRAM)
            vram_used = self._call(op, index, smi.amdsmi_get_gpu_memory_usage, h, smi.AmdSmiMemoryType.VRAM)
            procs = self._call("listing GPU processes", index, smi.amdsmi_get_gpu_process_list, h)
            cus = self._call(op, index, smi.amdsmi_get_gpu_asic_info, h).get("num_compute_units")
            xcc = spec.xccs_per_partition(compute) if spec else 1
            parts.append(LogicalPartition(
                gpu=index, index=k, hip_index=int(enum["hip_id"]), render_node=f"renderD{enum['drm_render']}",
                cu_count=int(cus) if isinstance(cus, int) else (spec.cus_per_partition(compute) if spec else 0),
                xcc_count=xcc, vram_total_bytes=int(vram_total), vram_used_bytes=int(vram_used),
                processes=tuple(GpuProcess(int(p["pid"]), str(p.get("name", "N/A")),
                                           int(p.get("memory_usage", {}).get("vram_mem", p.get("mem", 0)) or 0))
                                for p in procs)))
        return PhysicalGpu(index=index, bdf=members[0][1], model=spec.name if spec else str(asic.get("market_name")),
                           hive_id=int(xgmi.get("xgmi_hive_id", 0) or 0) if isinstance(xgmi.get("xgmi_hive_id"), int) else 0,
                           numa_node=int(numa) if isinstance(numa, int) else 0, compute_mode=compute, memory_mode=memory,
                           partitions=tuple(parts),
                           memory_caps=tuple(MemoryPartitionMode(c) for c in caps if c in MemoryPartitionMode.__members__))

    def _primary_handle(self, gpu: int):
        handles = self._handles()
        groups: dict[str, list[tuple[Any, str]]] = {}
        for h in handles:
            bdf = self.smi.amdsmi_get_gpu_device_bdf(h)
            groups.setdefault(bdf.rsplit(".", 1)[0], []).append((h, bdf))
        keys = sorted(groups)
        if not 0 <= gpu < len(keys):
            raise BackendError("finding the GPU", BackendErrorCode.INVAL, f"no GPU {gpu} (GPUs 0-{len(keys) - 1})", gpu)
        return min(groups[keys[gpu]], key=lambda m: int(m[1].rsplit(".", 1)[1], 16))[0]

    def _busy_detail(self, gpu: int) -> str:
        try:
            return describe_processes(self.inventory().gpu(gpu))
        except (BackendError, KeyError):
            return ""

    @_bounded("timeout_s")
    def set_compute_mode(self, gpu: int, mode: ComputePartitionMode) -> None:
        mode = ComputePartitionMode(mode)
        op = f"setting compute partition {mode.value}"
        h = self._call(op, gpu, self._primary_handle, gpu)
        if self._call(op, gpu, self.smi.amdsmi_get_gpu_compute_partition, h) == mode.value:
            return
        try:
            self.smi.amdsmi_set_gpu_compute_partition(h, self.smi.AmdSmiComputePartitionType[mode.value])
        except self.smi.AmdSmiException as e:
            err = self._err(e, op, gpu)
            if err.code == BackendErrorCode.BUSY:
                err = BackendError(op, err.code, self._busy_detail(gpu) or err.detail, gpu)
            raise err from None

    @_bounded("timeout_s")
    def set_memory_mode(self, gpu: int, mode: MemoryPartitionMode) -> None:
        mode = MemoryPartitionMode(mode)
        op = f"setting memory partition {mode.value}"
        h = self._call(op, gpu, self._primary_handle, gpu)
        try:
            self.smi.amdsmi_set_gpu_memory_partition(h, self.smi.AmdSmiMemoryPartitionType[mode.value])
        except self.smi.AmdSmiException as e:
            err = self._err(e, op, gpu)
            if err.code == BackendErrorCode.BUSY:
                err = BackendError(op, err.code, self._busy_detail(gpu) or err.detail, gpu)
            raise err from None

    @_bounded("reload_timeout_s")
    def reload_driver(self, progress: ProgressFn | None = None) -> None:
        if progress:
            progress("reloading amdgpu (amdsmi_gpu_driver_reload)", 0.0)
        if not hasattr(self.smi, "amdsmi_gpu_driver_reload"):
            raise BackendError("reloading the amdgpu driver", BackendErrorCode.NOT_SUPPORTED,
                               "this amdsmi has no amdsmi_gpu_driver_reload (removed in ROCm 10.0): "
                               "use the amd-smi-cli backend, which runs modprobe")
        self._call("reloading the amdgpu driver", None, self._handles)
        self._call("reloading the amdgpu driver", None, self.smi.amdsmi_gpu_driver_reload)
        if progress:
            progress("amdgpu reloaded", 1.0)
