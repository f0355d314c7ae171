"""The intent journal ``<state_dir>/journal.jsonl``: each step is recorded (fsync) BEFORE it is taken, its result after.

Why: the state file is a snapshot written after a pass or a tick; a controller
SIGKILLed between two snapshots (after a spawn, during a stop or a driver reload)
would otherwise leave work nobody knows about: orphan vLLMs holding VRAM, a stop
half done, a GPU mid-repartition. With the journal, start-up recovery
(``reconcile.recovery``) knows every launch that may have happened (spawn intents
carry the full launch record; the marker in its environment finds the process),
finishes journaled stops, and reports an interrupted repartition, which the next
plan rolls forward from the modes the GPU really has now.

Records (one JSON object per line): ``spawn`` {id, entry}, ``spawned`` {id, pid,
pgid}, ``stop`` {ids}, ``stopped`` {ids}, ``repartition`` {targets: gpu -> modes},
``reload`` {}, ``repartitioned`` {gpus}. ``checkpoint`` (after each state-file
write) rewrites the journal atomically keeping only what the state file does not
cover (an open repartition), so it stays small.

Failpoints (tests only, the etcd ``gofail`` pattern): ``GPU_SHARING_FAILPOINT=op[:n][@delay_s]``
SIGKILLs this process right after the n-th ``op`` record is durable (or delay_s
later, e.g. in the middle of a driver reload). Unset in production: one dict lookup.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from gpu_sharing.runtime.state_file import StateEntry

JOURNAL_FILE_NAME = "journal.jsonl"
JOURNAL_MAX_BYTES = 16 * 1024 * 1024
"""Replay reads at most this much (checkpoints keep it far smaller)."""
FAILPOINT_ENV = "GPU_SHARING_FAILPOINT"


@dataclass
class JournalReplay:
    spawned: dict[str, StateEntry] = field(default_factory=dict)
    """Launch records of every spawn intent, with pid/pgid when its result was journaled."""
    stopping: set[str] = field(default_factory=set)
    """Stops journaled but not completed."""
    repartitioning: dict[int, str] = field(default_factory=dict)
    """GPU -> target modes of a repartition journaled but not completed."""
    problems: list[str] = field(default_factory=list)


def _failpoint() -> tuple[str, int, float] | None:
    spec = os.environ.get(FAILPOINT_ENV, "")
    if not spec:
        return None
    spec, _, delay = spec.partition("@")
    op, _, n = spec.partition(":")
    try:
        return op, int(n or 1), float(delay or 0)
    except ValueError:
        return None


class Journal:
    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_FILE_NAME
        self._lock = threading.Lock()
        self._open_repartition: dict[str, Any] | None = None
        self._failpoint = _failpoint()
        self._counts: dict[str, int] = {}

    # ---- writing ---------------------------------------------------------------------------------
    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._maybe_fail(record["op"])

    def _maybe_fail(self, op: str) -> None:
        if self._failpoint is None or self._failpoint[0] != op:
            return
        self._counts[op] = self._counts.get(op, 0) + 1
        if self._counts[op] != self._failpoint[1]:
            return
        delay = self._failpoint[2]
        if delay <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def spawn_intent(self, entry: StateEntry) -> None:
        self._append({"op": "spawn", "id": entry.instance_id, "entry": entry.to_json()})

    def spawned(self, instance_id: str, pid: int, pgid: int) -> None:
        self._append({"op": "spawned", "id": instance_id, "pid": pid, "pgid": pgid})

    def stop_intent(self, instance_ids: Iterable[str]) -> None:
        ids = sorted(instance_ids)
        if ids:
            self._append({"op": "stop", "ids": ids})

    def stopped(self, instance_ids: Iterable[str]) -> None:
        ids = sorted(instance_ids)
        if ids:
            self._append({"op": "stopped", "ids": ids})

    def repartition_intent(self, targets: dict[int, str]) -> None:
        record = {"op": "repartition", "targets": {str(g): t for g, t in sorted(targets.items())}}
        self._open_repartition = record
        self._append(record)

    def reload_intent(self) -> None:
        self._append({"op": "reload"})

    def repartitioned(self, gpus: Iterable[int]) -> None:
        self._open_repartition = None
        self._append({"op": "repartitioned", "gpus": sorted(gpus)})

    def checkpoint(self) -> None:
        """The state file was just written: keep only what it does not cover (an open repartition)."""
        keep = [self._open_repartition] if self._open_repartition else []
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in keep).encode()
        with self._lock:
            if not keep and not self.path.exists():
                return
            fd, tmp = tempfile.mkstemp(prefix=".journal.", suffix=".tmp", dir=self.state_dir)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)

    # ---- reading ---------------------------------------------------------------------------------
    def replay(self) -> JournalReplay:
        out = JournalReplay()
        try:
            with open(self.path, "rb") as f:
                raw = f.read(JOURNAL_MAX_BYTES)
        except FileNotFoundError:
            return out
        except OSError as e:
            out.problems.append(f"{self.path}: unreadable ({e.strerror or e}); ignored")
            return out
        bad = 0
        for line in raw.splitlines():
            try:
                _apply(out, json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                bad += 1  # a torn last line (killed mid-write) or garbage: the markers still find our processes
        if bad:
            out.problems.append(f"{self.path}: {bad} unreadable record(s) skipped")
        return out


def _apply(out: JournalReplay, rec: dict[str, Any]) -> None:
    op = rec["op"]
    if op == "spawn":
        out.spawned[str(rec["id"])] = StateEntry.from_json(rec["entry"])
        out.stopping.discard(str(rec["id"]))
    elif op == "spawned":
        old = out.spawned.get(str(rec["id"]))
        if old is not None:
            out.spawned[old.instance_id] = replace(old, pid=int(rec["pid"]), pgid=int(rec["pgid"]))
    elif op == "stop":
        out.stopping.update(str(i) for i in rec["ids"])
    elif op == "stopped":
        out.stopping.difference_update(str(i) for i in rec["ids"])
    elif op == "repartition":
        out.repartitioning = {int(g): str(t) for g, t in rec["targets"].items()}
    elif op == "repartitioned":
        out.repartitioning = {}


__all__ = ["FAILPOINT_ENV", "JOURNAL_FILE_NAME", "Journal", "JournalReplay"]
