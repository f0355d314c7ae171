"""The runtime state file ``<state_dir>/instances.json``: what we started, so a later run can adopt it.

Why: instances outlive ``gpu-sharing apply`` and a daemon restart (own session).
Without a record the next run would either start duplicates (ports, VRAM) or
orphan them. Written atomically (tmp file, fsync, os.replace, mode 0600) so a
crash mid-write leaves the old file, never a torn one.

Identity rule for adoption: a recorded pid is ours only if it is alive AND its
/proc/<pid>/cmdline equals the recorded argv AND /health answers. We never kill
a process we cannot identify that way (pids are reused).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from gpu_sharing.runtime.spawner import argv_matches, pid_alive

STATE_FILE_NAME = "instances.json"
STATE_VERSION = 1
STATE_MAX_BYTES = 32 * 1024 * 1024
"""A state file larger than this is not ours to parse (thousands of instances fit in a few MB)."""


@dataclass(frozen=True)
class StateEntry:
    instance_id: str
    model: str
    replica: int
    fingerprint: str
    served_names: tuple[str, ...]
    partitions: tuple[str, ...]
    hip_indices: tuple[int, ...]
    memory_bytes_per_rank: int
    tp: int
    pid: int | None
    pgid: int | None
    port: int
    url: str
    argv: tuple[str, ...]
    started_at: float | None
    state: str
    env: tuple[tuple[str, str], ...] = ()
    """Only the variables we set (HIP_VISIBLE_DEVICES, ...), so a dead instance can be restarted as it was."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["served_names"] = list(self.served_names)
        d["partitions"] = list(self.partitions)
        d["hip_indices"] = list(self.hip_indices)
        d["argv"] = list(self.argv)
        d["env"] = dict(self.env)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "StateEntry":
        return cls(
            instance_id=str(d["instance_id"]), model=str(d["model"]), replica=int(d["replica"]),
            fingerprint=str(d.get("fingerprint", "")), served_names=tuple(d.get("served_names", ())),
            partitions=tuple(str(p) for p in d.get("partitions", ())),
            hip_indices=tuple(int(i) for i in d.get("hip_indices", ())),
            memory_bytes_per_rank=int(d.get("memory_bytes_per_rank", 0)), tp=int(d.get("tp", 1)),
            pid=_opt_int(d.get("pid")), pgid=_opt_int(d.get("pgid")), port=int(d["port"]),
            url=str(d.get("url", "")), argv=tuple(str(a) for a in d.get("argv", ())),
            started_at=_opt_float(d.get("started_at")), state=str(d.get("state", "")),
            env=tuple(sorted((str(k), str(v)) for k, v in (d.get("env") or {}).items())))


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE_NAME


def read_state(state_dir: Path) -> list[StateEntry]:
    """Entries of the state file; a missing file is an empty list. A corrupt one raises ValueError naming it."""
    path = state_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable state file ({e}); move it away to start fresh") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: unsupported state file (expected version {STATE_VERSION})")
    try:
        return [StateEntry.from_json(e) for e in data.get("instances", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed instance entry ({e!r})") from None


@dataclass(frozen=True)
class StateRead:
    """What ``load_state_safely`` could use, and why (part of) the file was set aside."""

    entries: tuple[StateEntry, ...]
    problem: str = ""
    moved_to: Path | None = None


def load_state_safely(state_dir: Path) -> StateRead:
    """The state file's valid entries. A file that is not a regular file, too large, not JSON, of another
    version, or with bad entries is moved aside (``instances.json.bad-<time>-<pid>``) and its valid
    entries (if any) are kept: the caller rebuilds the rest from the OS markers. Never raises for content."""
    path = state_path(state_dir)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return StateRead(())
    except OSError as e:
        return StateRead((), f"{path}: cannot stat the state file: {e.strerror or e}")
    good: list[StateEntry] = []
    if not stat.S_ISREG(st.st_mode):
        problem = "not a regular file"
    elif st.st_size > STATE_MAX_BYTES:
        problem = f"{st.st_size} bytes, over the {STATE_MAX_BYTES}-byte limit"
    elif st.st_size == 0:
        problem = "empty"
    else:
        problem = _parse_entries(path, good)
    if not problem:
        return StateRead(tuple(good))
    moved = path.with_name(f"{STATE_FILE_NAME}.bad-{int(time.time())}-{os.getpid()}")
    try:
        os.replace(path, moved)
    except OSError as e:
        return StateRead(tuple(good), f"{path}: {problem}; could not move it aside: {e.strerror or e}")
    return StateRead(tuple(good), f"{path}: {problem}; moved aside to {moved.name}", moved)


def _parse_entries(path: Path, good: list[StateEntry]) -> str:
    """Append the valid entries to good; return what was wrong ("" when nothing)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(STATE_MAX_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"unreadable ({type(e).__name__})"
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return f"unsupported (expected a JSON object with version {STATE_VERSION})"
    raw = data.get("instances", [])
    if not isinstance(raw, list):
        return "'instances' is not a list"
    bad = 0
    for item in raw:
        try:
            good.append(StateEntry.from_json(item))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            bad += 1
    return f"{bad} malformed instance entr{'y' if bad == 1 else 'ies'}" if bad else ""


def write_state(state_dir: Path, entries: Iterable[StateEntry]) -> Path:
    """Atomic replace: tmp file in the same dir, fsync, os.replace, fsync the dir. Mode 0600."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = state_path(state_dir)
    body = json.dumps({"version": STATE_VERSION,
                       "instances": [e.to_json() for e in sorted(entries, key=lambda e: e.instance_id)]},
                      indent=2)
    fd, tmp = tempfile.mkstemp(prefix=".instances.", suffix=".tmp", dir=state_dir)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def identifiable(entry: StateEntry) -> bool:
    """The recorded pid is alive and runs exactly the recorded argv (so it is ours to signal)."""
    return entry.pid is not None and pid_alive(entry.pid) and bool(entry.argv) and argv_matches(entry.pid, entry.argv)
