"""Start and signal vLLM processes, each in its own session (process group).

Why a session per instance: vLLM forks workers (one per TP rank, plus helpers).
Signalling the group (``killpg``) reaches all of them, so a stop never orphans a
child holding VRAM; and an instance survives the daemon or ``gpu-sharing apply``
exiting (the state file lets the next one adopt it).

Never ``shell=True``: argv is a list built by the launch spec. The child's
environment is ``os.environ`` plus the spec's variables. An optional preexec
hook (gpu_sharing.isolation confinement: CPU affinity, user drop) runs in the
child before exec.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from gpu_sharing.runtime import logs
from gpu_sharing.runtime.process_group import pids_by_group


class ProcessHandle(Protocol):
    pid: int
    pgid: int

    def poll(self) -> int | None:
        """Exit code once the process ended, else None. Never blocks."""
        ...

    def signal_group(self, sig: int) -> None:
        """Send sig to the whole process group; a vanished group is not an error."""
        ...

    def group_empty(self) -> bool:
        """No live process is left in the group (workers too): VRAM can be released."""
        ...


@dataclass(frozen=True)
class SpawnRequest:
    instance_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_path: Path
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 3
    preexec_fn: Callable[[], None] | None = None
    cwd: str | None = None


class Spawner(Protocol):
    def spawn(self, request: SpawnRequest) -> ProcessHandle:
        """Start the process or raise OSError (missing executable, permission)."""
        ...


def _safe_killpg(pgid: int, sig: int) -> None:
    # Refuse to signal our own group or init: that would take down the daemon itself.
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid} (not an instance's own group)")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class PopenHandle:
    """A process we started (our child): poll() reaps it."""

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its own group

    def poll(self) -> int | None:
        return self._popen.poll()

    def signal_group(self, sig: int) -> None:
        _safe_killpg(self.pgid, sig)

    def group_empty(self) -> bool:
        return self.poll() is not None and not group_pids(self.pgid)


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie (zombies hold no VRAM and never answer)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    # Field 3 follows the parenthesised command name, which may itself contain ')'.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X")


def read_cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return tuple(p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")[:-1])


class AdoptedHandle:
    """A process a previous daemon/apply started: not our child, so liveness comes from /proc."""

    def __init__(self, pid: int, pgid: int):
        self.pid = pid
        self.pgid = pgid

    def poll(self) -> int | None:
        return None if pid_alive(self.pid) else -1

    def signal_group(self, sig: int) -> None:
        _safe_killpg(self.pgid, sig)

    def group_empty(self) -> bool:
        return not group_pids(self.pgid)


def group_pids(pgid: int) -> list[int]:
    """Every live pid of a process group (vLLM's EngineCore and TP workers run as children)."""
    return pids_by_group().get(pgid, [])


class SubprocessSpawner:
    """The real spawner: subprocess.Popen, own session, log file, env merged over os.environ."""

    def spawn(self, request: SpawnRequest) -> ProcessHandle:
        fd = logs.open_for_child(request.log_path, request.log_max_bytes, request.log_backups)
        env = {**os.environ, **request.env}
        try:
            popen = subprocess.Popen(  # noqa: S603 - argv list, no shell
                list(request.argv), env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                start_new_session=True, close_fds=True, preexec_fn=request.preexec_fn, cwd=request.cwd)
        finally:
            os.close(fd)
        return PopenHandle(popen)


def argv_matches(pid: int, argv: Sequence[str]) -> bool:
    """/proc/<pid>/cmdline equals the recorded argv: the only proof a pid is still ours."""
    return read_cmdline(pid) == tuple(argv)
