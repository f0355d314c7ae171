"""The simulated GPU node: one JSON state file shared by separate processes.

Why a file and not an in-memory object: the daemon, the fake amd-smi CLI, the
fake amdsmi module and every fake vLLM server are separate processes that must
see the same GPUs, modes and VRAM, like on a real node. Every change takes an
exclusive file lock and is written atomically (tmp file + os.replace).

The node enforces the real partitioning rules (docs/hardware-facts.md):
- compute-mode change: root only, SETTING_UNAVAILABLE for a pair the GPU model does not offer,
  refused with BUSY per the node's ``kfd_mode_switch`` (see ``_kfd_blockers``): ``strict`` (default,
  kernels before the May-2025 KFD change) any GPU process on the node blocks every GPU;
  ``cgroup_exclusion`` (with the change) a process blocks a GPU unless its device cgroup excludes it;
- memory-mode change: root only, pending until a driver reload, applies to every GPU
  of the XGMI hive, refused with BUSY while any GPU process exists on the hive;
- a driver reload takes ``reload_time_s`` and applies pending memory modes; a GPU whose
  memory mode changed comes up in the kernel's default (auto) compute mode for the new NPS
  mode (NPS1 -> SPX, NPS2 -> DPX, NPS4 -> QPX, NPS = XCC count -> CPX), whatever it was before;
- every mode change bumps ``generation`` (handles from before are stale).
Processes whose pid is gone are reaped on every read, like the driver freeing VRAM
when a process dies; ``synthetic`` processes (tests, foreign-process knobs) never are.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M

STATE_FILE = "node.json"
LOCK_FILE = "node.lock"
_BUSES = ["0c", "22", "38", "5c", "9f", "af", "bf", "df"]
FAULT_OPS = ("set_compute", "set_memory", "reload", "list", "process")
FAULT_CODES = ("BUSY", "NO_PERM", "TIMEOUT", "GARBAGE", "RESTART_FAILED", "NOT_SUPPORTED")
# When the KFD refuses a compute-partition change (BUSY). "strict": any process that opened /dev/kfd
# anywhere on the node blocks every compute-mode change ("The KFD currently bars a compute partition mode
# switch while a KFD process exists"). "cgroup_exclusion": only processes whose device cgroup includes
# that GPU block it (kgd2kfd_check_and_lock_kfd returns -EBUSY only if a process has a pdd on the device;
# kfd_init_apertures creates pdds for the GPUs the device cgroup allows). Source: amd-gfx patch
# "drm/amdkfd: allow compute partition mode switch with cgroup exclusions" (J. Kim, 29 May 2025),
# commit 96f75f9594466f92b10873cc3a49267cfe15ee49, merged for Linux 6.17 (drm-next-2025-07-30).
KFD_MODE_SWITCH = ("strict", "cgroup_exclusion")
"""How the kernel's KFD decides that a compute-partition switch is BUSY (``_kfd_blockers``)."""


class SimError(Exception):
    """A refused operation; ``code`` is the amdsmi status name (BUSY, NO_PERM, ...)."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class SimOutOfMemory(Exception):
    def __init__(self, hip_index: int, requested_bytes: int, free_bytes: int, total_bytes: int):
        self.hip_index = hip_index
        self.requested_bytes = requested_bytes
        self.free_bytes = free_bytes
        self.total_bytes = total_bytes
        super().__init__(f"device {hip_index}: requested {requested_bytes} bytes, free {free_bytes} of {total_bytes}")


def default_state_dir() -> Path:
    env = os.environ.get("GPU_SHARING_SIM_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "gpu-sharing" / "sim"


def pid_alive(pid: int) -> bool:
    """True when the pid exists and is not a zombie (a dead process's VRAM is freed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _auto_compute(spec, memory: M) -> C:
    """Kernel auto rule: NPS count -> compute mode (aqua_vanjaram.c)."""
    n = memory.count
    if n == 1:
        return C.SPX
    if n == spec.xcd_count:
        return C.CPX
    for mode in spec.compute_modes():
        if spec.partitions(mode) == n and spec.is_valid(mode, memory):
            return mode
    return next(c for c in spec.compute_modes() if spec.is_valid(c, memory))


class SimNode:
    """Handle on a node state directory. Cheap to create; every call re-reads the file."""

    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)
        self._path = self.state_dir / STATE_FILE
        self._lock = FileLock(str(self.state_dir / LOCK_FILE), timeout=30)
        if not self._path.exists():
            raise FileNotFoundError(f"no simulated node in {self.state_dir} (run: gpu-sharing simulator init)")

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(cls, state_dir: Path | str, gpu_model: str = "MI300X", gpus: int = 8, *,
               compute_mode: str | None = None, memory_mode: str | None = None,
               reload_time_s: float = 2.0, kfd_mode_switch: str = "strict") -> "SimNode":
        spec = get_spec(gpu_model)
        c = C(compute_mode) if compute_mode else spec.default_pair[0]
        m = M(memory_mode) if memory_mode else spec.default_pair[1]
        if not spec.is_valid(c, m):
            raise SimError("SETTING_UNAVAILABLE", f"{c.value}+{m.value} is not valid on {spec.name}; "
                           f"allowed: {spec.describe_valid_pairs()}")
        if not 1 <= gpus <= 64:
            raise ValueError("gpus must be between 1 and 64")
        if kfd_mode_switch not in KFD_MODE_SWITCH:
            raise ValueError(f"kfd_mode_switch must be one of {KFD_MODE_SWITCH}, not {kfd_mode_switch!r}")
        state = {
            "version": 1, "gpu_model": spec.name, "root": True, "generation": 0,
            "reload_time_s": reload_time_s, "kfd_mode_switch": kfd_mode_switch,
            "gpus": [{"index": i, "bus": _BUSES[i % 8] if i < 8 else f"{0xe0 + i:02x}", "hive_id": 0x5A3F8E21C0D47B19,
                      "numa_node": 0 if i < gpus / 2 or gpus == 1 else 1, "compute_mode": c.value,
                      "memory_mode": m.value, "pending_memory_mode": None} for i in range(gpus)],
            "processes": [], "faults": {}, "knobs": {},
        }
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(d / STATE_FILE, state)
        return cls(d)

    @classmethod
    def open(cls, state_dir: Path | str) -> "SimNode":
        return cls(state_dir)

    @classmethod
    def open_or_create(cls, state_dir: Path | str | None = None, **create_args: Any) -> "SimNode":
        """Open the node in state_dir; create it (``create_args`` as for ``create``) when there is none yet."""
        d = Path(state_dir) if state_dir else default_state_dir()
        lock = FileLock(str(d / LOCK_FILE), timeout=30) if d.exists() else None
        if (d / STATE_FILE).exists():
            return cls(d)
        d.mkdir(parents=True, exist_ok=True)
        with lock or FileLock(str(d / LOCK_FILE), timeout=30):
            if not (d / STATE_FILE).exists():
                return cls.create(d, **create_args)
        return cls(d)

    # ---------------------------------------------------------------- state I/O
    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self._path.read_text())
        except (OSError, ValueError) as e:
            raise SimError("FILE_ERROR", f"simulated node state {self._path} is unreadable: {e}") from None

    @contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            state = self._read()
            yield state
            _atomic_write(self._path, state)

    def _reap(self, state: dict[str, Any]) -> bool:
        before = len(state["processes"])
        state["processes"] = [p for p in state["processes"] if p.get("synthetic") or pid_alive(p["pid"])]
        return len(state["processes"]) != before

    def state(self) -> dict[str, Any]:
        """A consistent snapshot (dead processes reaped)."""
        with self._lock:
            state = self._read()
            if self._reap(state):
                _atomic_write(self._path, state)
            return state

    # ---------------------------------------------------------------- views
    @property
    def spec(self):
        return get_spec(self._read()["gpu_model"])

    def partitions(self, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Logical partitions in enumeration order with VRAM used and processes."""
        state = state or self.state()
        spec = get_spec(state["gpu_model"])
        out: list[dict[str, Any]] = []
        hip = 0
        for g in state["gpus"]:
            c = C(g["compute_mode"])
            n = spec.partitions(c)
            for k in range(n):
                procs = [p for p in state["processes"] if p["hip_index"] == hip]
                out.append({
                    "gpu": g["index"], "index": k, "hip_index": hip, "render_node": f"renderD{128 + hip}",
                    "card": f"card{hip}", "bdf": f"0000:{g['bus']}:00.{k}",
                    "cu_count": spec.cus_per_partition(c), "xcc_count": spec.xccs_per_partition(c),
                    "vram_total_bytes": spec.vram_per_partition_bytes(c),
                    "vram_used_bytes": sum(p["vram_bytes"] for p in procs), "processes": procs,
                })
                hip += 1
        return out

    def partition_info(self, hip_index: int) -> dict[str, Any]:
        for p in self.partitions():
            if p["hip_index"] == hip_index:
                return {k: v for k, v in p.items() if k != "processes"}
        raise SimError("NOT_FOUND", f"no logical GPU with HIP index {hip_index}")

    def processes(self) -> list[dict[str, Any]]:
        return list(self.state()["processes"])

    # ---------------------------------------------------------------- processes (used by the fake vLLM)
    def claim_memory(self, hip_index: int, pid: int, name: str, vram_bytes: int, *, synthetic: bool = False,
                     device_cgroup: list[int] | None = None) -> None:
        """A process allocates VRAM on one partition. ``device_cgroup``: the node device indices its device
        cgroup allows (None: every device); the KFD gives it a context on each of them (``_kfd_blockers``)."""
        with self._edit() as state:
            self._reap(state)
            parts = {p["hip_index"]: p for p in self.partitions(state)}
            if hip_index not in parts:
                raise SimError("NOT_FOUND", f"no logical GPU with HIP index {hip_index}")
            part = parts[hip_index]
            free = part["vram_total_bytes"] - part["vram_used_bytes"]
            if vram_bytes > free:
                raise SimOutOfMemory(hip_index, vram_bytes, free, part["vram_total_bytes"])
            state["processes"].append({"pid": pid, "name": name, "hip_index": hip_index,
                                       "vram_bytes": int(vram_bytes), "synthetic": synthetic,
                                       "device_cgroup": None if device_cgroup is None else sorted(device_cgroup)})

    def set_process_memory(self, pid: int, hip_index: int, vram_bytes: int) -> None:
        """Knob: a process grows (or shrinks) its VRAM use; may exceed the partition like a leak would not."""
        with self._edit() as state:
            for p in state["processes"]:
                if p["pid"] == pid and p["hip_index"] == hip_index:
                    p["vram_bytes"] = int(vram_bytes)
                    return
            raise SimError("NOT_FOUND", f"no process {pid} on HIP index {hip_index}")

    def release_process(self, pid: int) -> None:
        with self._edit() as state:
            state["processes"] = [p for p in state["processes"] if p["pid"] != pid]

    # ---------------------------------------------------------------- faults and knobs
    def set_fault(self, op: str, code: str, count: int = 1) -> None:
        if op not in FAULT_OPS or code not in FAULT_CODES:
            raise ValueError(f"fault op must be one of {FAULT_OPS} and code one of {FAULT_CODES}")
        with self._edit() as state:
            state["faults"][op] = {"code": code, "count": int(count)}

    def clear_faults(self) -> None:
        with self._edit() as state:
            state["faults"] = {}

    def peek_fault(self, op: str) -> str | None:
        """The injected fault for ``op`` without consuming it."""
        f = self._read()["faults"].get(op)
        return f["code"] if f else None

    def take_fault(self, op: str) -> str | None:
        """Consume one injected fault for ``op`` (count -1 = forever); returns its code."""
        with self._edit() as state:
            f = state["faults"].get(op)
            if not f:
                return None
            if f["count"] > 0:
                f["count"] -= 1
                if f["count"] == 0:
                    del state["faults"][op]
            return f["code"]

    def set_root(self, root: bool) -> None:
        with self._edit() as state:
            state["root"] = bool(root)

    def set_kfd_mode_switch(self, mode: str) -> None:
        if mode not in KFD_MODE_SWITCH:
            raise ValueError(f"kfd_mode_switch must be one of {KFD_MODE_SWITCH}, not {mode!r}")
        with self._edit() as state:
            state["kfd_mode_switch"] = mode

    def set_failing_reading(self, gpu: int, failing: bool = True) -> None:
        """Knob: this GPU's partition readings fail (fake amdsmi raises, the fake CLI prints "N/A")."""
        with self._edit() as state:
            _gpu(state, gpu)["failing_reading"] = bool(failing)

    def set_cli_version(self, version: str) -> None:
        """Knob: the fake amd-smi CLI's output style, "7.0" (default) or "6.4" (bare JSON arrays)."""
        if version not in ("7.0", "6.4"):
            raise ValueError(f"cli version must be 7.0 or 6.4, not {version!r}")
        with self._edit() as state:
            state["cli_version"] = version

    def set_reload_time(self, seconds: float) -> None:
        with self._edit() as state:
            state["reload_time_s"] = float(seconds)

    def set_knob(self, name: str, value: Any) -> None:
        """A fact the node reports differently from a healthy node (simulator/node_facts.py lists them)."""
        from simulator.node_facts import KNOB_NAMES

        if name not in KNOB_NAMES:
            raise ValueError(f"unknown knob {name!r}; known: {', '.join(KNOB_NAMES)}")
        with self._edit() as state:
            state.setdefault("knobs", {})[name] = value

    def open_kfd(self, pid: int, name: str, gpus: list[int] | None, *, synthetic: bool = True) -> None:
        """A process opens /dev/kfd with a device cgroup allowing ``gpus`` (None = every GPU).

        It holds no VRAM; amdsmi before ROCm 10 lists it where it has a KFD context (real-stack-findings).
        """
        with self._edit() as state:
            parts = self.partitions(state)
            first = next(p["hip_index"] for p in parts if gpus is None or p["gpu"] in gpus)
            state["processes"].append({"pid": pid, "name": name, "hip_index": first, "vram_bytes": 0,
                                       "synthetic": synthetic, "kfd_gpus": None if gpus is None else list(gpus)})

    # ---------------------------------------------------------------- mode changes
    def _fault(self, op: str) -> None:
        code = self.take_fault(op)
        if code and code != "GARBAGE":
            raise SimError(code, f"injected fault on {op}")

    def set_compute_mode(self, gpu: int, mode: str) -> bool:
        """Returns False when already at ``mode`` (no write), True when changed."""
        self._fault("set_compute")
        with self._edit() as state:
            self._reap(state)
            g = _gpu(state, gpu)
            spec = get_spec(state["gpu_model"])
            if not state["root"]:
                raise SimError("NO_PERM", "Permission Denied")
            c = C(mode)
            m = M(g["memory_mode"])
            if not spec.is_valid(c, m):
                raise SimError("SETTING_UNAVAILABLE", f"{c.value} is not available with {m.value} on {spec.name}; "
                               f"allowed pairs: {spec.describe_valid_pairs()}")
            if g["compute_mode"] == c.value:
                return False
            procs = _kfd_blockers(self, state, gpu)
            if procs:
                raise SimError("BUSY", _busy_detail(procs))
            g["compute_mode"] = c.value
            state["generation"] += 1
            return True

    def set_memory_mode(self, gpu: int, mode: str) -> bool:
        self._fault("set_memory")
        with self._edit() as state:
            self._reap(state)
            g = _gpu(state, gpu)
            spec = get_spec(state["gpu_model"])
            if not state["root"]:
                raise SimError("NO_PERM", "Permission Denied")
            m = M(mode)
            if spec.memory_mode_fixed:
                raise SimError("NOT_SUPPORTED", f"memory partition is fixed at boot on {spec.name}")
            if m not in spec.memory_modes():
                raise SimError("INVAL", f"{m.value} is not offered by {spec.name}; valid memory partition modes: "
                               f"{','.join(x.value for x in spec.memory_modes())}")
            hive = [x for x in state["gpus"] if x["hive_id"] == g["hive_id"]]
            if all(x["memory_mode"] == m.value and not x["pending_memory_mode"] for x in hive):
                return False
            busy = [p for x in hive for p in _procs_on_gpu(self, state, x["index"])]
            if busy:
                raise SimError("BUSY", _busy_detail(busy))
            for x in hive:
                x["pending_memory_mode"] = None if x["memory_mode"] == m.value else m.value
            return True

    def reload_driver(self, progress: Callable[[str, float], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> None:
        """Simulated ``modprobe -r amdgpu && modprobe amdgpu``: all GPU work must be stopped."""
        self._fault("reload")
        st = self.state()
        if not st["root"]:
            raise SimError("NO_PERM", "Permission Denied")
        if st["processes"]:
            raise SimError("BUSY", "amdgpu is in use: " + _busy_detail(st["processes"]))
        total = float(st["reload_time_s"])
        steps = max(1, min(20, math.ceil(total / 0.25)))
        for i in range(steps):
            if progress:
                progress("reloading amdgpu", i / steps)
            sleep(total / steps)
        with self._edit() as state:
            spec = get_spec(state["gpu_model"])
            for g in state["gpus"]:
                pending = g.pop("pending_memory_mode", None)
                g["pending_memory_mode"] = None
                if pending:
                    # The NPS change re-initialises the XCP manager with the default partition mode
                    # (module parameter amdgpu.user_partt_mode, default -2 = auto: kernel amdgpu_drv.c;
                    # auto rule __aqua_vanjaram_get_auto_mode in aqua_vanjaram.c), so the compute mode
                    # chosen before is lost even when it is valid with the new NPS mode
                    # (docs/hardware-facts.md: "re-set compute mode afterwards"). Unverified on hardware.
                    g["memory_mode"] = pending
                    g["compute_mode"] = _auto_compute(spec, M(pending)).value
            state["generation"] += 1
        if progress:
            progress("amdgpu reloaded", 1.0)


def _gpu(state: dict[str, Any], gpu: int) -> dict[str, Any]:
    for g in state["gpus"]:
        if g["index"] == gpu:
            return g
    raise SimError("NOT_FOUND", f"no GPU {gpu} (GPUs 0-{len(state['gpus']) - 1})")


def _procs_on_gpu(node: SimNode, state: dict[str, Any], gpu: int) -> list[dict[str, Any]]:
    return [dict(p, partition=f"{part['gpu']}.{part['index']}") for part in node.partitions(state)
            if part["gpu"] == gpu for p in part["processes"]]


def _kfd_blockers(node: SimNode, state: dict[str, Any], gpu: int) -> list[dict[str, Any]]:
    """Processes whose KFD context makes a compute-partition switch of ``gpu`` BUSY.

    ``kfd_init_apertures()`` (kfd_flat_memory.c) runs at open("/dev/kfd") and creates a process-device
    entry (pdd) on every GPU the process's device cgroup allows; HIP_VISIBLE_DEVICES does not limit it
    (shared reference real-stack-findings.md, "KFD"). Every process on the simulated node is a KFD process.
    - ``strict`` (before amd-gfx "drm/amdkfd: allow compute partition mode switch with cgroup exclusions",
      J. Kim, 29 May 2025: "The KFD currently bars a compute partition mode switch while a KFD process
      exists"): any process anywhere on the node blocks every GPU.
    - ``cgroup_exclusion`` (with that change: ``kgd2kfd_check_and_lock_kfd(kfd)`` is -EBUSY only if a KFD
      process has a pdd on that device): a process blocks ``gpu`` unless its device cgroup excludes every
      partition of it.
    """
    mode = state.get("kfd_mode_switch", "strict")
    parts = node.partitions(state)
    where = {p["hip_index"]: f"{p['gpu']}.{p['index']}" for p in parts}
    mine = {p["hip_index"] for p in parts if p["gpu"] == gpu}
    out = []
    for p in state["processes"]:
        if "kfd_gpus" in p:  # a process that only opened /dev/kfd (open_kfd: its cgroup's GPUs, None = all)
            blocks = mode == "strict" or p["kfd_gpus"] is None or gpu in p["kfd_gpus"]
        else:
            allowed = p.get("device_cgroup")
            blocks = mode == "strict" or allowed is None or bool(mine & set(allowed))
        if blocks:
            out.append(dict(p, partition=where.get(p["hip_index"], f"hip {p['hip_index']}")))
    return out


def _busy_detail(procs: list[dict[str, Any]]) -> str:
    where = {p.get("partition", f"hip {p['hip_index']}") for p in procs}
    names = ", ".join(f"pid {p['pid']} {p['name']}" for p in procs[:3])
    return f"{len(procs)} process{'es' if len(procs) != 1 else ''} on partition {', '.join(sorted(where))} ({names})"


def _atomic_write(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
