"""`gpu-sharing apply` / `stop` in-process: confirmation rule, exit codes, JSON, re-apply = zero actions and
same pids, stop --all leaves nothing. The planner and demands are the real ones; the backend and the launch
argv are the small stand-ins of test_reconciler (trivial sleeping processes), so this runs without the simulator."""

from __future__ import annotations

import functools
import json

import pytest

from gpu_sharing.cli import main as cli
from gpu_sharing.cli.commands import _runtime_common
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.spawner import pid_alive

from reconcile_fakes import RecordingBackend
from test_reconciler import QWEN, fake_launch_builder

CONFIG = """\
version: v1
models:
  - {name: a, source: org/a, replicas: 2, config_json: %s, max_model_len: 1024}
  - {name: b, source: org/b, config_json: %s, max_model_len: 1024}
vllm: {port_range: [21200, 21299], stop_grace_s: 2, startup_timeout_s: 10}
""" % (json.dumps(QWEN), json.dumps(QWEN))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    backend = RecordingBackend({0: C.CPX})
    monkeypatch.setattr(_runtime_common, "make_backend", lambda args, cfg: backend)
    monkeypatch.setattr(_runtime_common, "Reconciler", functools.partial(
        Reconciler, launches=fake_launch_builder, health_checker=lambda url: True))
    cfg = tmp_path / "gs.yaml"
    cfg.write_text(CONFIG)
    return str(cfg), str(tmp_path / "state"), backend


def run_json(capsys, argv):
    code = cli.main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else out


def test_apply_requires_yes_without_tty(setup, capsys, monkeypatch):
    cfg, state, _ = setup
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    code = cli.main(["apply", "-c", cfg, "--state-dir", state])
    err = capsys.readouterr().err
    assert code == 2 and "--yes" in err and "Traceback" not in err


def test_apply_twice_then_stop_all(setup, capsys):
    cfg, state, backend = setup
    code, first = run_json(capsys, ["apply", "-c", cfg, "--state-dir", state, "--yes", "--json"])
    try:
        assert code == 0 and first["ok"] and sorted(first["started"]) == ["a-0", "a-1", "b-0"]
        pids = {i["instance_id"]: i["pid"] for i in first["instances"]}
        assert all(i["state"] == "READY" for i in first["instances"])
        backend.calls.clear()
        code, second = run_json(capsys, ["apply", "-c", cfg, "--state-dir", state, "--yes", "--json"])
        assert code == 0 and second["actions"] == 0 and backend.mutating() == []
        assert {i["instance_id"]: i["pid"] for i in second["instances"]} == pids
        code, stopped = run_json(capsys, ["stop", "b", "-c", cfg, "--state-dir", state, "--json"])
        assert code == 0 and stopped["stopped"] == ["b-0"] and not pid_alive(pids["b-0"])
        assert pid_alive(pids["a-0"])
    finally:
        code, stopped = run_json(capsys, ["stop", "--all", "-c", cfg, "--state-dir", state, "--json"])
    assert code == 0 and sorted(stopped["stopped"]) == ["a-0", "a-1"]
    assert not any(pid_alive(p) for p in pids.values())


def test_stop_needs_a_target(setup, capsys):
    cfg, state, _ = setup
    assert cli.main(["stop", "-c", cfg, "--state-dir", state]) == 2
    assert "--all" in capsys.readouterr().err
