"""Operator recovery on the Reconciler: a FAILED instance is retried when its model's config changes (reload),
`restart` clears FAILED, `hold` keeps a model stopped across reloads until `release`. Sleeping Python processes
stand in for vLLM (as in test_reconciler.py)."""

from __future__ import annotations

import signal

import pytest

from gpu_sharing.config.schema import Config
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.reconcile import operations
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.instance_state import InstanceState as S

from reconcile_fakes import RecordingBackend
from test_reconciler import QWEN, fake_launch_builder, tick_until


def cfg(max_model_len: int = 1024) -> Config:
    return Config.model_validate({
        "version": "v1",
        "models": [{"name": "b", "source": "org/b", "config_json": QWEN, "max_model_len": max_model_len}],
        "vllm": {"port_range": [21500, 21599], "stop_grace_s": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
                 "max_restarts": 0, "startup_timeout_s": 10}})


def state(rec, iid="b-0"):
    return rec.supervisor.state_of(iid)


def fail_it(rec):
    rec.supervisor.handle_of("b-0").signal_group(signal.SIGKILL)
    tick_until(rec, lambda: state(rec) == S.FAILED)


def test_failed_retried_on_changed_config_and_by_restart(tmp_path):
    rec = Reconciler(cfg(), RecordingBackend({0: C.SPX}), state_dir=tmp_path / "s", health_checker=lambda url: True,
                     launches=fake_launch_builder)
    try:
        assert rec.reconcile_once().ok and rec.wait_settled(10)
        fail_it(rec)
        rec.update_config(cfg())  # unchanged: FAILED stays (it needs `restart`)
        rec.reconcile_once()
        assert state(rec) == S.FAILED
        rec.update_config(cfg(max_model_len=2048))  # changed: a fresh start
        rec.reconcile_once()
        tick_until(rec, lambda: state(rec) == S.READY)
        fail_it(rec)
        result = operations.restart(rec, "b")
        assert result.instances == ("b-0",)
        tick_until(rec, lambda: state(rec) == S.READY)
        with pytest.raises(UserError, match="known: b"):
            operations.restart(rec, "nope")
    finally:
        rec.stop_all(timeout_s=5)


def test_hold_survives_reload_until_release(tmp_path):
    rec = Reconciler(cfg(), RecordingBackend({0: C.SPX}), state_dir=tmp_path / "s", health_checker=lambda url: True,
                     launches=fake_launch_builder)
    try:
        assert rec.reconcile_once().ok and rec.wait_settled(10)
        assert operations.hold(rec, "b").instances == ("b-0",)
        rec.update_config(cfg(max_model_len=2048))
        rec.reconcile_once()
        assert state(rec) is None and rec.held_models == {"b": "operator hold"}
        assert operations.release(rec, "b").message.startswith("released")
        rec.reconcile_once()
        tick_until(rec, lambda: state(rec) == S.READY)
        assert operations.release(rec, "b").message == "was not held"
    finally:
        rec.stop_all(timeout_s=5)
