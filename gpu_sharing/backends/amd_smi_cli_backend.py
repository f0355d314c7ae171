"""AmdSmiCliBackend: drives the ``amd-smi`` executable (argv lists, ``--json``) where the Python
library is missing.

Reads: ``list -e``, ``static -p -a -u``, ``metric -m``, ``process`` (all ``--json``); writes:
``set -g <primary id> -C MODE`` and ``set -g <primary id> -M MODE`` (answering the Y/N prompt);
driver reload: a configurable argv sequence (default ``modprobe -r amdgpu`` then ``modprobe amdgpu``,
as ROCm >= 7.0 requires). The CLI's GPU ids are logical (one per partition), so a physical GPU is
addressed by its primary partition's id. The 7.0-era CLI has no BUSY wording: on a failed set we
look at the process list and report BUSY with the processes when there are any.

Real outputs handled (shared reference amd-smi-shapes.md): ``static`` prints ``"N/A"`` for any reading
that failed (amdsmi_cli/amdsmi_commands.py, ROCm/amdsmi @05640712): such a GPU becomes an
``UnknownGpu`` with the reason and the others are read normally; ROCm 6.4's CLI prints bare JSON arrays
(no ``gpu_data`` wrapper) and names the compute mode ``compute_partition`` (CMD64). Every call has a
timeout (``timeout_s``).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Sequence

from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, ProgressFn
from gpu_sharing.hardware.catalog import spec_from_market_name
from gpu_sharing.hardware.inventory import (GpuProcess, Inventory, LogicalPartition, PhysicalGpu, UnknownGpu,
                                            describe_processes)
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

DEFAULT_RELOAD = (("modprobe", "-r", "amdgpu"), ("modprobe", "amdgpu"))


class AmdSmiCliBackend:
    name = "amd-smi-cli"

    def __init__(self, executable: str | Sequence[str] = "amd-smi", *, timeout_s: float = 60.0,
                 reload_argv: Sequence[Sequence[str]] = DEFAULT_RELOAD, reload_timeout_s: float = 600.0,
                 env: dict[str, str] | None = None):
        self.exe = [executable] if isinstance(executable, str) else list(executable)
        self.timeout_s = timeout_s
        self.reload_argv = [list(a) for a in reload_argv]
        self.reload_timeout_s = reload_timeout_s
        self.env = env

    def _run(self, args: list[str], operation: str, gpu: int | None = None, stdin: str | None = None,
             timeout_s: float | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self.exe, *args], input=stdin, capture_output=True, text=True,
                                  timeout=timeout_s or self.timeout_s, env=self.env, check=False)
        except FileNotFoundError:
            raise BackendError(operation, BackendErrorCode.UNAVAILABLE, f"{self.exe[0]} not found", gpu) from None
        except subprocess.TimeoutExpired:
            raise BackendError(operation, BackendErrorCode.TIMEOUT, f"amd-smi {' '.join(args)} took longer than "
                               f"{timeout_s or self.timeout_s:g} s", gpu) from None

    def _json(self, args: list[str], operation: str) -> Any:
        r = self._run([*args, "--json"], operation)
        if r.returncode != 0:
            raise BackendError(operation, _code(r.stderr + r.stdout), _last(r.stderr) or _last(r.stdout))
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            if "Error code:" in r.stdout:  # 7.0-era: library errors on stdout with exit 0
                raise BackendError(operation, _code(r.stdout), _last(r.stdout)) from None
            raise BackendError(operation, BackendErrorCode.OTHER,
                               f"amd-smi {' '.join(args)} printed invalid JSON ({e.msg} at char {e.pos})") from None

    # ------------------------------------------------------------------ observe
    def inventory(self) -> Inventory:
        op = "reading the GPU inventory"
        listing = self._json(["list", "-e"], op)
        static = {row["gpu"]: row for row in _rows(self._json(["static", "-p", "-a", "-u"], op))}
        mem = {row["gpu"]: row.get("mem_usage", {}) for row in _rows(self._json(["metric", "-m"], op))}
        procs = {row["gpu"]: row.get("process_list", []) for row in _rows(self._json(["process"], op))}
        groups: dict[str, list[dict]] = {}
        for row in listing:
            groups.setdefault(row["bdf"].rsplit(".", 1)[0], []).append(row)
        gpus, unknown = [], []
        for index, key in enumerate(sorted(groups)):
            members = sorted(groups[key], key=lambda r: int(r["bdf"].rsplit(".", 1)[1], 16))
            try:
                gpus.append(self._physical(index, members, static, mem, procs))
            except (KeyError, ValueError, TypeError) as e:  # "N/A" or a missing reading: this GPU only
                unknown.append(UnknownGpu(index, members[0]["bdf"], f"amd-smi reading failed: {_why(e)}"))
        return Inventory(tuple(gpus), tuple(unknown))

    def _physical(self, index: int, members: list[dict], static: dict, mem: dict, procs: dict) -> PhysicalGpu:
        primary = static[members[0]["gpu"]]
        market = primary.get("asic", {}).get("market_name", "")
        spec = spec_from_market_name(market)
        part = primary["partition"]
        compute = ComputePartitionMode(part.get("accelerator_partition", part.get("compute_partition")))
        memory = MemoryPartitionMode(part["memory_partition"])
        parts = []
        for k, row in enumerate(members):
            m = mem[row["gpu"]]
            plist = [p["process_info"] for p in procs.get(row["gpu"], []) if isinstance(p.get("process_info"), dict)]
            parts.append(LogicalPartition(
                gpu=index, index=k, hip_index=int(row["hip_id"]), render_node=str(row["render"]),
                cu_count=int(static[row["gpu"]].get("asic", {}).get("num_compute_units", 0) or 0),
                xcc_count=spec.xccs_per_partition(compute) if spec else 1,
                vram_total_bytes=int(m["total_vram"]["value"]) * 1048576,
                vram_used_bytes=int(m["used_vram"]["value"]) * 1048576,
                processes=tuple(GpuProcess(int(p["pid"]), str(p["name"]),
                                           int(p.get("memory_usage", {}).get("vram_mem", {}).get("value", 0)))
                                for p in plist)))
        numa = primary.get("numa", {}).get("node", 0)
        return PhysicalGpu(index=index, bdf=members[0]["bdf"], model=spec.name if spec else market, hive_id=0,
                           numa_node=numa if isinstance(numa, int) else 0, compute_mode=compute,
                           memory_mode=memory, partitions=tuple(parts),
                           memory_caps=tuple(spec.memory_modes()) if spec else ())

    def _primary_id(self, gpu: int, operation: str) -> int:
        listing = self._json(["list"], operation)
        groups: dict[str, list[dict]] = {}
        for row in listing:
            groups.setdefault(row["bdf"].rsplit(".", 1)[0], []).append(row)
        keys = sorted(groups)
        if not 0 <= gpu < len(keys):
            raise BackendError(operation, BackendErrorCode.INVAL, f"no GPU {gpu}", gpu)
        return min(groups[keys[gpu]], key=lambda r: int(r["bdf"].rsplit(".", 1)[1], 16))["gpu"]

    # ------------------------------------------------------------------ change
    def set_compute_mode(self, gpu: int, mode: ComputePartitionMode) -> None:
        mode = ComputePartitionMode(mode)
        op = f"setting compute partition {mode.value}"
        if self.inventory().gpu(gpu).compute_mode == mode:
            return
        self._set(["set", "-g", str(self._primary_id(gpu, op)), "-C", mode.value], op, gpu, "Successfully set")

    def set_memory_mode(self, gpu: int, mode: MemoryPartitionMode) -> None:
        mode = MemoryPartitionMode(mode)
        op = f"setting memory partition {mode.value}"
        self._set(["set", "-g", str(self._primary_id(gpu, op)), "-M", mode.value], op, gpu, "Successfully set", "Y\n")

    def _set(self, args: list[str], op: str, gpu: int, success: str, stdin: str | None = None) -> None:
        r = self._run(args, op, gpu, stdin)
        if r.returncode == 0 and success in r.stdout:
            return
        text = (r.stderr + "\n" + r.stdout).strip()
        code = _code(text)
        detail = _last(r.stderr) or _last(r.stdout)
        if code == BackendErrorCode.OTHER:
            busy = self._busy(gpu)
            if busy:
                code, detail = BackendErrorCode.BUSY, busy
        raise BackendError(op, code, detail, gpu)

    def _busy(self, gpu: int) -> str:
        try:
            return describe_processes(self.inventory().gpu(gpu))
        except (BackendError, KeyError):
            return ""

    def reload_driver(self, progress: ProgressFn | None = None) -> None:
        op = "reloading the amdgpu driver"
        for n, argv in enumerate(self.reload_argv):
            if progress:
                progress(f"running {' '.join(argv)}", n / len(self.reload_argv))
            try:
                r = subprocess.run(argv, input="Y\n", capture_output=True, text=True, timeout=self.reload_timeout_s,
                                   env=self.env, check=False)
            except FileNotFoundError:
                raise BackendError(op, BackendErrorCode.UNAVAILABLE, f"{argv[0]} not found") from None
            except subprocess.TimeoutExpired:
                raise BackendError(op, BackendErrorCode.TIMEOUT, f"{' '.join(argv)} took longer than "
                                   f"{self.reload_timeout_s:g} s") from None
            if r.returncode != 0 or "Unable" in r.stdout:
                raise BackendError(op, _code(r.stderr + r.stdout), _last(r.stderr) or _last(r.stdout) or
                                   f"{' '.join(argv)} exited {r.returncode}")
        if progress:
            progress("amdgpu reloaded", 1.0)


def _rows(data: Any) -> list[dict]:
    """Per-GPU rows: ROCm 7's ``{"gpu_data": [...]}`` or ROCm 6.4's bare array."""
    if isinstance(data, dict):
        data = data.get("gpu_data", [])
    return [row for row in data if isinstance(row, dict) and "gpu" in row] if isinstance(data, list) else []


def _why(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"no {e.args[0]!r} in its output"
    return str(e)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _code(text: str) -> BackendErrorCode:
    for marker, code in (("SETTING_UNAVAILABLE", BackendErrorCode.SETTING_UNAVAILABLE),
                         ("requires elevation", BackendErrorCode.NO_PERM), ("NO_PERM", BackendErrorCode.NO_PERM),
                         ("AMDSMI_STATUS_BUSY", BackendErrorCode.BUSY), ("NOT_SUPPORTED", BackendErrorCode.NOT_SUPPORTED),
                         ("TIMEOUT", BackendErrorCode.TIMEOUT), ("RESTART_ERR", BackendErrorCode.RESTART_FAILED),
                         ("restart driver", BackendErrorCode.RESTART_FAILED), ("INVAL", BackendErrorCode.INVAL)):
        if marker in text:
            return code
    return BackendErrorCode.OTHER
