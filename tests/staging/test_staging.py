"""StagingManager on a generated local "hub": progress, truncation, retries, the may-start predicate."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import pytest

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.errors import OperationError
from gpu_sharing.runtime.staging import (DiskBudgetError, RetryPolicy, StageState, StagingManager,
                                         check_disk_budget, verify_model_dir)


def _shard(path: Path, payload_bytes: int) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [payload_bytes], "data_offsets": [0, payload_bytes]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x01" * payload_bytes)


def make_model(root: Path, shards=(3000, 5000)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, size in zip(names, shards):
        _shard(root / name, size)
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(shards)}, "weight_map": {f"l{i}": n for i, n in enumerate(names)}}))
    return root


def test_local_model_verifies_and_becomes_ready(tmp_path):
    path = make_model(tmp_path / "m")
    seen = []
    mgr = StagingManager(downloader=lambda m, r: pytest.fail("local path must not download"),
                         on_progress=lambda p: seen.append(p.state))
    model = ModelSettings(name="m", source=str(path))
    assert not mgr.may_start("m")
    result = mgr.ensure(model)
    assert result.state is StageState.READY and mgr.may_start("m")
    assert result.bytes_total == sum(p.stat().st_size for p in path.iterdir())
    assert seen[-2:] == [StageState.VERIFYING, StageState.READY]


def test_truncated_shard_fails_verification(tmp_path):
    path = make_model(tmp_path / "m")
    shard = path / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(OperationError, match="total_size"):
        verify_model_dir(path)
    mgr = StagingManager(downloader=lambda m, r: path)
    result = mgr.ensure(ModelSettings(name="m", source=str(path)))
    assert result.state is StageState.FAILED and "truncated" in result.error
    assert not mgr.may_start("m")


def test_missing_shard_is_named(tmp_path):
    path = make_model(tmp_path / "m")
    (path / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(OperationError, match="model-00001-of-00002"):
        verify_model_dir(path)


def test_download_reports_progress_and_retries_with_capped_backoff(tmp_path):
    good = make_model(tmp_path / "hub" / "org--m")
    calls, sleeps, progress = [], [], []

    def flaky(model, report):
        calls.append(model.source)
        if len(calls) < 4:
            raise ConnectionError("hub unreachable")
        total = 8000
        for done in (0, 4000, 8000):
            report(done, total)
        return good

    mgr = StagingManager(downloader=flaky, sleep=sleeps.append, staging_dir=tmp_path,
                         retry=RetryPolicy(attempts=5, initial_backoff_s=1, max_backoff_s=3),
                         on_progress=lambda p: progress.append((p.state, p.bytes_done)))
    result = mgr.ensure(ModelSettings(name="m", source="org/m"))
    assert result.state is StageState.READY and result.attempts == 4
    assert sleeps == [1, 2, 3]
    assert (StageState.DOWNLOADING, 4000) in progress


def test_failed_download_is_reported_after_the_last_attempt(tmp_path):
    sleeps = []

    def broken(model, report):
        raise ConnectionError("nope")

    mgr = StagingManager(downloader=broken, sleep=sleeps.append, retry=RetryPolicy(attempts=3, initial_backoff_s=5))
    result = mgr.ensure(ModelSettings(name="m", source="org/m"))
    assert result.state is StageState.FAILED and "ConnectionError: nope" in result.error
    assert sleeps == [5, 10] and mgr.state("m") is StageState.FAILED


def test_budget_refuses_with_numbers_and_no_retry(tmp_path):
    attempts = []

    def big(model, report):
        attempts.append(1)
        report(0, 10_000)
        return tmp_path

    mgr = StagingManager(downloader=big, sleep=lambda s: None, budget_bytes=1000, staging_dir=tmp_path)
    result = mgr.ensure(ModelSettings(name="m", source="org/m"))
    assert result.state is StageState.FAILED and "10000" in result.error and "1000" in result.error
    assert len(attempts) == 1
    with pytest.raises(DiskBudgetError, match="free"):
        check_disk_budget(tmp_path, 10**18)


def test_instance_waits_while_weights_download(tmp_path):
    good = make_model(tmp_path / "m")
    release = threading.Event()
    downloading = threading.Event()

    def slow(model, report):
        report(0, None)
        downloading.set()
        assert release.wait(10)
        return good

    mgr = StagingManager(downloader=slow)
    worker = threading.Thread(target=mgr.ensure, args=(ModelSettings(name="m", source="org/m"),))
    worker.start()
    assert downloading.wait(10)
    assert mgr.state("m") is StageState.DOWNLOADING and not mgr.may_start("m")
    assert not mgr.wait_ready("m", timeout_s=0.05)
    release.set()
    assert mgr.wait_ready("m", timeout_s=10)
    worker.join(10)
    assert mgr.may_start("m")
