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

TAIL_BYTES = 8192


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


def tail_lines(path: Path, max_lines: int = 8) -> list[str]:
    """The last non-empty lines of a log (for status: vLLM's own error text)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-max_lines:]


GENERIC_FAILURES = ("Engine core initialization failed", "See root cause above", "Traceback (most recent call last)")
"""vLLM prints the root cause first, then these wrappers (real-stack-findings: the last lines are not the cause)."""


def root_cause(lines: list[str]) -> str | None:
    """vLLM's own refusal text: the last ``SomeError: message`` line that is not a generic wrapper."""
    for ln in reversed(lines):
        text = re.sub(r"^\([^)]*\)\s+", "", ln)  # "(EngineCore pid=1) " prefix
        if re.match(r"^[\w.]*(Error|Exception): \S", text) and not any(g in text for g in GENERIC_FAILURES):
            return text
    return None


def failure_reason(path: Path, max_lines: int = 4) -> str:
    """vLLM's root-cause line (e.g. "ValueError: To serve at least one request ..."), else the lines that
    look like an error (Error/Exception/failed), else the plain tail."""
    lines = tail_lines(path, 40)
    cause = root_cause(lines)
    if cause:
        return cause
    keys = ("error", "exception", "failed", "free memory", "traceback")
    hits = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    chosen = (hits or lines)[-max_lines:]
    return " | ".join(chosen)
