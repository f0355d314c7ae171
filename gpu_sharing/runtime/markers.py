"""OS markers: every instance we spawn carries ``GPU_SHARING_INSTANCE=<id>`` and ``GPU_SHARING_STATE_DIR=<dir>``
in its environment, so our processes are found from /proc without any state file.

Why the environment: it is inherited by every child (vLLM's EngineCore and TP
workers), survives the controller's death, is readable by the same user from
``/proc/<pid>/environ`` (proc(5): "the initial environment that was set when the
currently executing program was started via execve(2)"), and cannot be lost by a
corrupt or deleted ``instances.json``. The state dir in the marker keeps two
controllers with different state dirs (tests, two users) from touching each
other's processes.

A marked process group with no launch record we can verify is an orphan (e.g. the
controller was SIGKILLed between spawn and state write and the record was lost):
it is stopped, never adopted blindly, and the normal plan starts a fresh one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpu_sharing.runtime.spawner import group_pids

MARKER_ENV = "GPU_SHARING_INSTANCE"
STATE_DIR_ENV = "GPU_SHARING_STATE_DIR"
RECORD_ENV = "GPU_SHARING_LAUNCH"
"""The launch record (model, replica, fingerprint, partitions, HIP indices, port, ... and the names of the
variables we set), JSON: with /proc/<pid>/cmdline and environ it rebuilds the state-file entry."""
ENVIRON_MAX_BYTES = 1 << 20
"""Read at most this much of /proc/<pid>/environ (the kernel caps argv+env near ARG_MAX anyway)."""


def marker_env(instance_id: str, state_dir: Path | str, record: dict | None = None) -> dict[str, str]:
    env = {MARKER_ENV: instance_id, STATE_DIR_ENV: str(Path(state_dir).resolve())}
    if record is not None:
        env[RECORD_ENV] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    return env


@dataclass(frozen=True)
class MarkedGroup:
    """The live processes of one instance (one process group: its own session)."""

    instance_id: str
    pgid: int
    pids: tuple[int, ...]
    record: dict | None = None
    """The leader's launch record (RECORD_ENV), None when absent or unreadable."""
    env: tuple[tuple[str, str], ...] = ()
    """The leader's values of the variables the record names (``env_keys``) plus the markers."""

    @property
    def leader(self) -> int:
        return self.pgid if self.pgid in self.pids else min(self.pids)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            tail = f.read().decode("utf-8", "replace").rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return tail if len(tail) > 3 else None


def read_environ(pid: int | str, keys: frozenset[str] | None = None) -> dict[str, str]:
    """The process's initial environment (only ``keys``; the markers by default); {} when unreadable."""
    keys_b = {k.encode() for k in (keys or {MARKER_ENV, STATE_DIR_ENV})}
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read(ENVIRON_MAX_BYTES)
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in keys_b:
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
    return out


def scan_marked(state_dir: Path | str) -> list[MarkedGroup]:
    """The live marked process groups spawned for this state dir, oldest leader first (two groups with one
    instance id are a duplicate: the caller keeps at most one)."""
    want = str(Path(state_dir).resolve())
    groups: dict[tuple[str, int], list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        env = read_environ(entry)
        if env.get(STATE_DIR_ENV) != want or not env.get(MARKER_ENV):
            continue
        groups.setdefault((env[MARKER_ENV], int(fields[3])), []).append(int(entry))
    found = [_with_record(MarkedGroup(iid, pgid, tuple(sorted(pids)))) for (iid, pgid), pids in groups.items()]
    return sorted(found, key=lambda g: (g.instance_id, g.leader))


def _with_record(group: MarkedGroup) -> MarkedGroup:
    rec_env = read_environ(group.leader, frozenset({RECORD_ENV}))
    try:
        record = json.loads(rec_env.get(RECORD_ENV, ""))
        keys = frozenset(str(k) for k in record.get("env_keys", ())) | {MARKER_ENV, STATE_DIR_ENV, RECORD_ENV}
    except (ValueError, AttributeError, TypeError):
        return group
    env = tuple(sorted(read_environ(group.leader, keys).items()))
    return MarkedGroup(group.instance_id, group.pgid, group.pids, record if isinstance(record, dict) else None, env)


def stop_group(pgid: int, grace_s: float, *, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> bool:
    """SIGTERM the group, SIGKILL after grace_s; True once no process of it is left (bounded: grace_s + 5 s)."""
    if pgid <= 1 or pgid == os.getpgrp():
        return False  # never our own group or init
    sent_kill = False
    deadline = clock() + grace_s
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    while True:
        if not group_pids(pgid):
            return True
        if clock() >= deadline and not sent_kill:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return True
            sent_kill = True
            deadline = clock() + 5.0
        elif clock() >= deadline:
            return False
        sleep(0.05)


__all__ = ["MARKER_ENV", "RECORD_ENV", "STATE_DIR_ENV", "MarkedGroup", "marker_env", "read_environ", "scan_marked", "stop_group"]
