"""Weight staging: make sure a model's weights are complete on local disk before it starts.

A vLLM instance started on half-downloaded weights crashes minutes later
(or worse, loads a truncated shard).  ``StagingManager`` tracks one state per
model (PENDING -> DOWNLOADING -> VERIFYING -> READY / FAILED); the runtime asks
``is_ready(model)`` / ``may_start(model)`` before starting an instance.

Verification uses the safetensors index (``model.safetensors.index.json``):
every file named in ``weight_map`` must exist, and the shards' tensor payload
(file size minus the 8-byte length prefix and the JSON header) must add up to
the index's ``metadata.total_size``.  A truncated shard therefore fails.

Downloads go through ``huggingface_hub.snapshot_download`` (optional ``hub``
extra) and never happen when ``HF_HUB_OFFLINE=1``: then only local paths and
the local cache are verified.  A failed download is retried with capped
exponential backoff; the clock/sleep are injected so tests do not sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.errors import OperationError

INDEX_NAME = "model.safetensors.index.json"


class StageState(str, Enum):
    PENDING = "PENDING"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Progress:
    model: str
    state: StageState
    bytes_done: int
    bytes_total: int | None


@dataclass(frozen=True)
class StageResult:
    model: str
    state: StageState
    path: str | None
    bytes_total: int
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_backoff_s: float = 2.0
    max_backoff_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), capped."""
        return min(self.initial_backoff_s * (2 ** (attempt - 1)), self.max_backoff_s)


def _payload_bytes(shard: Path) -> int:
    """Tensor bytes of a safetensors file: size - 8 - header length."""
    size = shard.stat().st_size
    if size < 8:
        raise OperationError(f"{shard}: {size} bytes, too short for a safetensors header")
    with shard.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    if 8 + header_len > size:
        raise OperationError(f"{shard}: header says {header_len} bytes but the file has {size}")
    return size - 8 - header_len


def verify_model_dir(path: Path) -> int:
    """Check weights in ``path``; return the total bytes on disk. Raises OperationError naming the problem."""
    if not path.is_dir():
        raise OperationError(f"{path}: not a directory")
    if not (path / "config.json").is_file():
        raise OperationError(f"{path}: config.json is missing")
    index_path = path / INDEX_NAME
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            weight_map: dict[str, str] = index["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise OperationError(f"{index_path}: not a valid safetensors index ({e})") from e
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise OperationError(f"{path}: {len(missing)} shard(s) missing: {', '.join(missing[:5])}")
        payload = sum(_payload_bytes(path / s) for s in shards)
        expected = (index.get("metadata") or {}).get("total_size")
        if isinstance(expected, int) and payload != expected:
            raise OperationError(f"{path}: shards hold {payload} tensor bytes, index total_size is {expected} "
                                 "(truncated or partial download)")
    else:
        singles = list(path.glob("*.safetensors"))
        if not singles:
            raise OperationError(f"{path}: no {INDEX_NAME} and no *.safetensors file")
        for s in singles:
            _payload_bytes(s)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class DiskBudgetError(OperationError):
    """Not enough disk (free space or configured budget) for a download."""


def check_disk_budget(target_dir: Path, needed_bytes: int, budget_bytes: int | None = None) -> None:
    """Refuse, with numbers, when free disk or the configured budget is below ``needed_bytes``."""
    probe = target_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed_bytes > free:
        raise DiskBudgetError(f"staging needs {needed_bytes} bytes in {target_dir}, only {free} bytes free")
    if budget_bytes is not None and needed_bytes > budget_bytes:
        raise DiskBudgetError(f"staging needs {needed_bytes} bytes, the staging budget is {budget_bytes} bytes")


_WANTED_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".tiktoken")

Downloader = Callable[[ModelSettings, Callable[[int, int | None], None]], Path]


def hub_downloader(cache_dir: str | None = None) -> Downloader:
    """A downloader on huggingface_hub; offline (HF_HUB_OFFLINE=1) resolves the local cache only."""
    def download(model: ModelSettings, report: Callable[[int, int | None], None]) -> Path:
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise OperationError(f"{model.source}: not a local path and huggingface_hub is not installed; "
                                 "pip install 'gpu-sharing[hub]'") from e
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        total: int | None = None
        if not offline:  # size first, so the disk budget refuses before any byte is written
            from huggingface_hub import HfApi

            info = HfApi().model_info(model.source, revision=model.revision, files_metadata=True)
            total = sum(s.size or 0 for s in (info.siblings or []) if s.rfilename.endswith(_WANTED_SUFFIXES))
            report(0, total)
        local = snapshot_download(model.source, revision=model.revision, cache_dir=cache_dir,
                                  local_files_only=offline,
                                  allow_patterns=[f"*{suffix}" for suffix in _WANTED_SUFFIXES])
        if total is not None:
            report(total, total)
        return Path(local)
    return download


@dataclass
class _Entry:
    state: StageState = StageState.PENDING
    bytes_done: int = 0
    bytes_total: int | None = None
    attempts: int = 0
    error: str | None = None
    path: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class StagingManager:
    """Per-model staging state; ``ensure`` is blocking and thread-safe (call it from a worker thread)."""

    def __init__(self, *, downloader: Downloader | None = None, retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, budget_bytes: int | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 staging_dir: Path | None = None) -> None:
        self._staging_dir = staging_dir or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        self._downloader = downloader or hub_downloader()
        self._retry = retry
        self._sleep = sleep
        self._budget_bytes = budget_bytes
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def _entry(self, name: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(name, _Entry())

    def _set(self, name: str, state: StageState, **kw) -> None:
        entry = self._entry(name)
        with self._lock:
            entry.state = state
            for k, v in kw.items():
                setattr(entry, k, v)
        if self._on_progress:
            self._on_progress(Progress(name, state, entry.bytes_done, entry.bytes_total))

    def state(self, name: str) -> StageState:
        return self._entry(name).state

    def is_ready(self, name: str) -> bool:
        return self.state(name) is StageState.READY

    def may_start(self, name: str) -> bool:
        """The runtime's predicate: never start an instance on weights still staging."""
        return self.is_ready(name)

    def wait_ready(self, name: str, timeout_s: float) -> bool:
        """Block until staging of ``name`` finished (READY or FAILED) or the timeout; True when READY."""
        self._entry(name).done.wait(timeout_s)
        return self.is_ready(name)

    def ensure(self, model: ModelSettings) -> StageResult:
        name = model.name
        self._entry(name).done.clear()
        self._set(name, StageState.PENDING, error=None, attempts=0)
        local = Path(model.source).expanduser()
        try:
            if local.is_absolute() or model.source.startswith("."):
                return self._verify(model, local, attempts=0)
            return self._download_with_retry(model)
        finally:
            self._entry(name).done.set()

    def _verify(self, model: ModelSettings, path: Path, attempts: int) -> StageResult:
        self._set(model.name, StageState.VERIFYING, path=str(path))
        try:
            total = verify_model_dir(path)
        except OperationError as e:
            self._set(model.name, StageState.FAILED, error=str(e))
            return StageResult(model.name, StageState.FAILED, str(path), 0, attempts, str(e))
        self._set(model.name, StageState.READY, bytes_done=total, bytes_total=total)
        return StageResult(model.name, StageState.READY, str(path), total, attempts)

    def _download_with_retry(self, model: ModelSettings) -> StageResult:
        name = model.name
        last_error = ""
        for attempt in range(1, self._retry.attempts + 1):
            self._set(name, StageState.DOWNLOADING, attempts=attempt)

            def report(done: int, total: int | None) -> None:
                if total is not None and done == 0:
                    check_disk_budget(self._staging_dir, total, self._budget_bytes)
                self._set(name, StageState.DOWNLOADING, bytes_done=done, bytes_total=total)

            try:
                path = self._downloader(model, report)
                result = self._verify(model, path, attempt)
                if result.state is StageState.READY:
                    return result
                last_error = result.error or "verification failed"
            except DiskBudgetError as e:  # retrying cannot help: report at once
                self._set(name, StageState.FAILED, error=str(e))
                return StageResult(name, StageState.FAILED, None, 0, attempt, str(e))
            except OperationError as e:
                last_error = str(e)
            except Exception as e:  # network errors from the hub client: retried, then reported
                last_error = f"{type(e).__name__}: {e}"
            if attempt < self._retry.attempts:
                self._sleep(self._retry.backoff_s(attempt))
        self._set(name, StageState.FAILED, error=last_error)
        return StageResult(name, StageState.FAILED, None, 0, self._retry.attempts, last_error)
