"""The simulated GPU node: one JSON state file shared by separate processes.

Why a file and not an in-memory object: the daemon, the fake amd-smi CLI, the fake amdsmi module and every
fake vLLM server are separate processes that must see the same GPUs, modes and VRAM, like on a real node.
Every change takes an exclusive file lock and is written atomically (node_store.py).

The node enforces the real partitioning rules; the mode changes and their rules are in node_modes.py
(``ModeChanges``, a part of ``SimNode``). Processes whose pid is gone are reaped on every read, like the
driver freeing VRAM when a process dies; ``synthetic`` processes (tests, foreign-process knobs) never are.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from simulator.node_modes import KFD_MODE_SWITCH, ModeChanges
from simulator.node_store import (LOCK_FILE, STATE_FILE, SimError, SimOutOfMemory, atomic_write, default_state_dir,
                                  gpu_entry, pid_alive)

__all__ = ["FAULT_CODES", "FAULT_OPS", "KFD_MODE_SWITCH", "LOCK_FILE", "STATE_FILE", "SimError", "SimNode",
           "SimOutOfMemory", "default_state_dir", "pid_alive"]

_BUSES = ["0c", "22", "38", "5c", "9f", "af", "bf", "df"]
FAULT_OPS = ("set_compute", "set_memory", "reload", "list", "process")
FAULT_CODES = ("BUSY", "NO_PERM", "TIMEOUT", "GARBAGE", "RESTART_FAILED", "NOT_SUPPORTED")


class SimNode(ModeChanges):
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
        atomic_write(d / STATE_FILE, state)
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
            atomic_write(self._path, state)

    def _reap(self, state: dict[str, Any]) -> bool:
        before = len(state["processes"])
        state["processes"] = [p for p in state["processes"] if p.get("synthetic") or pid_alive(p["pid"])]
        return len(state["processes"]) != before

    def state(self) -> dict[str, Any]:
        """A consistent snapshot (dead processes reaped)."""
        with self._lock:
            state = self._read()
            if self._reap(state):
                atomic_write(self._path, state)
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
        cgroup allows (None: every device); the KFD gives it a context on each of them (``node_modes.kfd_blockers``)."""
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

    def set_failing_reading(self, gpu: int, failing: bool = True) -> None:
        """Knob: this GPU's partition readings fail (fake amdsmi raises, the fake CLI prints "N/A")."""
        with self._edit() as state:
            gpu_entry(state, gpu)["failing_reading"] = bool(failing)

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
