"""One controller per state dir: an exclusive ``flock`` on ``<state_dir>/controller.lock``.

Why: two controllers on one state dir each adopt every instance and then fight
(a second daemon stopping its "own" instances kills the first daemon's; ``apply``
while the daemon runs starts instances the daemon holds as FAILED). A Kubernetes
controller solves this with a lease; on one node ``flock(2)`` is the lease: the
kernel releases it when the holder dies, even by SIGKILL, so a crash never leaves
a stale lock behind (a pid file alone would).

The lock file holds ``<pid> <role>`` of the holder, so a refusal can name who holds
it. The daemon holds the lock for its lifetime; ``apply``, ``stop`` and
``partition set`` hold it while they run and refuse while the daemon holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gpu_sharing.errors import OperationError

LOCK_FILE_NAME = "controller.lock"
HOLDER_MAX_BYTES = 256


class ControllerLockHeld(OperationError):
    """Another controller holds the state dir. Exit code 1 (the operation could not run)."""

    def __init__(self, path: Path, holder_pid: int | None, holder_role: str, hint: str):
        self.path = path
        self.holder_pid = holder_pid
        self.holder_role = holder_role
        who = f"{holder_role or 'another controller'} (pid {holder_pid})" if holder_pid else "another controller"
        super().__init__(f"{path.parent}: {who} controls this state dir (lock {path}); {hint}")


class ControllerLock:
    """``acquire`` takes the lock without waiting or raises ControllerLockHeld; ``release`` (or exit) frees it."""

    def __init__(self, state_dir: Path | str, role: str):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE_NAME
        self.role = role
        self._fd: int | None = None

    def holder(self) -> tuple[int | None, str]:
        """(pid, role) written by the current holder; (None, "") when unreadable."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(HOLDER_MAX_BYTES).decode("utf-8", "replace").split()
        except OSError:
            return None, ""
        pid = int(text[0]) if text and text[0].isdigit() else None
        return pid, " ".join(text[1:])

    def acquire(self, hint: str = "") -> "ControllerLock":
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise OperationError(f"{self.path}: cannot open the controller lock: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid, role = self.holder()
            raise ControllerLockHeld(self.path, pid, role, hint or "stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.role}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing the last fd drops the flock
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ControllerLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


DAEMON_ROLE = "gpu-sharing daemon"


def cli_hint(verb: str) -> str:
    """What a refused mutating CLI command tells the operator to do instead."""
    return (f"`{verb}` changes instances and must not run beside it: edit the config and reload the daemon "
            "(`systemctl reload gpu-sharing`, SIGHUP or POST /admin/reload), or stop the daemon first")


__all__ = ["ControllerLock", "ControllerLockHeld", "DAEMON_ROLE", "LOCK_FILE_NAME", "cli_hint"]
