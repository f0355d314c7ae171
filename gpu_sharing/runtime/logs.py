"""Per-instance log files with size-based rotation.

Scheme (the simplest one that survives the daemon): the child's stdout and
stderr go straight to ``<log_dir>/<instance>.log`` opened with O_APPEND, so an
instance keeps logging after ``gpu-sharing apply`` exits or the daemon
restarts (no pipe whose reader could die and SIGPIPE vLLM). Rotation happens
(1) at every start, and (2) from the supervisor's tick when the file grows past
``log_max_bytes``: copy to ``.1`` (shifting older backups) and truncate in
place. Because the writer uses O_APPEND, its next write lands at the new end of
the truncated file. Lines written between copy and truncate can be lost; that
is the documented price of copytruncate (logrotate has the same trade-off).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from gpu_sharing.runtime.root_cause import root_cause

TAIL_BYTES = 8192
ROOT_CAUSE_TAIL_BYTES = 65536
"""Two vLLM tracebacks (EngineCore, then the API process) fit well within 64 KiB."""


def log_path(log_dir: Path, instance_id: str) -> Path:
    return Path(log_dir) / f"{instance_id}.log"


def _shift_backups(path: Path, backups: int) -> None:
    for i in range(backups - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i + 1}"))


def rotate(path: Path, backups: int) -> None:
    """Move path to path.1 (older ones shift up; beyond ``backups`` they are dropped)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if backups <= 0:
        path.unlink()
        return
    _shift_backups(path, backups)
    os.replace(path, path.with_name(f"{path.name}.1"))


def rotate_if_large(path: Path, max_bytes: int, backups: int) -> bool:
    """copytruncate when the live file is larger than max_bytes. Returns True when rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if backups > 0:
        _shift_backups(path, backups)
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def open_for_child(path: Path, max_bytes: int, backups: int) -> int:
    """Rotate, then open a fresh append-only fd (mode 0640) for the child's stdout/stderr."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    rotate(path, backups)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)


def tail_lines(path: Path, max_lines: int = 8, tail_bytes: int = TAIL_BYTES) -> list[str]:
    """The last non-empty lines of a log (for status: vLLM's own error text)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            data = f.read()
    except OSError:
        return []
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-max_lines:]


def failure_reason(path: Path, max_lines: int = 4) -> str:
    """vLLM's root cause from the traceback chain (root_cause.py); else lines that look like the error
    (Error/Exception/failed); else the plain tail."""
    cause = root_cause(tail_lines(path, 400, tail_bytes=ROOT_CAUSE_TAIL_BYTES))
    if cause:
        return cause
    lines = tail_lines(path, 40)
    keys = ("error", "exception", "failed", "free memory", "traceback")
    hits = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    chosen = (hits or lines)[-max_lines:]
    return " | ".join(chosen)
