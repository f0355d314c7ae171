"""The simulated node's state file and the errors its operations raise.

Why a file and not an in-memory object: the daemon, the fake amd-smi CLI, the fake amdsmi module and every
fake vLLM server are separate processes that must see the same GPUs, modes and VRAM, like on a real node.
``SimNode`` (node.py) takes an exclusive file lock for every change and writes through ``atomic_write``
(tmp file + fsync + os.replace), so a reader never sees half a state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "node.json"
LOCK_FILE = "node.lock"


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


def gpu_entry(state: dict[str, Any], gpu: int) -> dict[str, Any]:
    """The state's entry of physical GPU ``gpu``, or NOT_FOUND naming the GPUs there are."""
    for g in state["gpus"]:
        if g["index"] == gpu:
            return g
    raise SimError("NOT_FOUND", f"no GPU {gpu} (GPUs 0-{len(state['gpus']) - 1})")


def atomic_write(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
