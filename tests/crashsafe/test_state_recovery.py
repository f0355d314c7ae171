"""Bad state never multiplies instances: whatever happened to instances.json (corrupt, truncated, empty, another
version, partly bad, a directory, deleted), a restarted controller finds its live instances by their OS markers,
adopts them (same pids), moves the bad file aside, and starts nothing twice. Dead records are never restarted with
their old argv/devices; orphans (marked, unmatched) are stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.runtime.markers import MARKER_ENV, STATE_DIR_ENV, scan_marked
from gpu_sharing.runtime.state_file import state_path

from reconcile_fakes import RecordingBackend
from test_reconciler import new_reconciler, pids

IDS = ["a-0", "a-1", "b-0"]


def damage(path, kind):
    text = path.read_text()
    if kind == "corrupt":
        path.write_bytes(b"\x00\xffnot json")
    elif kind == "truncated":
        path.write_text(text[: len(text) // 2])
    elif kind == "empty":
        path.write_text("")
    elif kind == "unknown-version":
        path.write_text(json.dumps({**json.loads(text), "version": 99}))
    elif kind == "partly-bad":
        data = json.loads(text)
        data["instances"][0] = {"instance_id": "a-0", "port": "not a port"}
        path.write_text(json.dumps(data))
    elif kind == "directory":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("?")
    elif kind == "deleted":
        path.unlink()


@pytest.fixture
def running(tmp_path):
    """Three converged instances (sleeping processes carrying the markers), the controller gone (detach)."""
    backend = RecordingBackend({0: C.CPX})
    rec = new_reconciler(tmp_path, backend)
    report = rec.reconcile_once()
    assert report.ok and rec.wait_settled(10)
    first = pids(rec)
    rec.detach()
    yield backend, first
    for pid in first.values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_every_instance_carries_the_marker(tmp_path, running):
    _, first = running
    groups = scan_marked(tmp_path / "state")
    assert sorted(g.instance_id for g in groups) == IDS
    assert {g.instance_id: g.leader for g in groups} == first
    assert all(g.record and g.record["port"] and dict(g.env).get(STATE_DIR_ENV) for g in groups)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "unknown-version", "partly-bad", "directory",
                                  "deleted"])
def test_bad_state_file_is_set_aside_and_nothing_is_duplicated(tmp_path, running, kind):
    backend, first = running
    path = state_path(tmp_path / "state")
    damage(path, kind)
    notes = []
    rec = new_reconciler(tmp_path, backend, progress=notes.append)
    try:
        assert sorted(rec.adopt()) == IDS  # found by their markers: same processes
        assert pids(rec) == first
        if kind != "deleted":
            assert any("set aside" in n for n in notes), notes
            assert [p.name.startswith("instances.json.bad-") for p in path.parent.iterdir()].count(True) == 1
        again = rec.reconcile_once()
        assert again.ok and again.actions == 0 and backend.mutating() == []  # nothing started twice
        assert len(scan_marked(tmp_path / "state")) == 3
        assert path.is_file() and sorted(e["instance_id"] for e in json.loads(path.read_text())["instances"]) == IDS
    finally:
        rec.stop_all(timeout_s=5)
    assert scan_marked(tmp_path / "state") == []


def test_dead_record_is_not_restarted_with_its_old_argv(tmp_path, running):
    """A record whose process died is re-derived by the plan from the current inventory, not restarted as
    recorded: here its recorded argv and HIP device are bogus and must never be spawned."""
    backend, first = running
    os.killpg(first["a-0"], signal.SIGKILL)
    path = state_path(tmp_path / "state")
    data = json.loads(path.read_text())
    for e in data["instances"]:
        if e["instance_id"] == "a-0":
            e["argv"] = [sys.executable, "-c", "raise SystemExit('stale argv spawned')"]
            e["hip_indices"] = [97]
    path.write_text(json.dumps(data))
    rec = new_reconciler(tmp_path, backend)
    try:
        assert sorted(rec.adopt()) == ["a-1", "b-0"]
        assert "a-0" in rec.last_recovery.dropped and rec.supervisor.state_of("a-0") is None
        report = rec.reconcile_once()
        assert report.apply.started == ("a-0",)
        launch = next(ln for ln in rec.supervisor.launches() if ln.instance_id == "a-0")
        assert "stale argv spawned" not in " ".join(launch.argv) and launch.hip_indices != (97,)
        assert rec.wait_settled(10) and {s.state.value for s in rec.statuses()} == {"READY"}
    finally:
        rec.stop_all(timeout_s=5)


def test_marked_process_without_verifiable_record_is_stopped(tmp_path, running):
    """An orphan: our marker and state dir, no record it carries or that names it (e.g. a duplicate)."""
    backend, first = running
    env = {**os.environ, MARKER_ENV: "a-0", STATE_DIR_ENV: str((tmp_path / "state").resolve())}
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    rec = new_reconciler(tmp_path, backend)
    try:
        assert sorted(rec.adopt()) == IDS and pids(rec)["a-0"] == first["a-0"]
        assert orphan.wait(timeout=10) is not None  # stopped
        assert any(f"pgid {orphan.pid}" in s for s in rec.last_recovery.stopped)
    finally:
        if orphan.poll() is None:
            orphan.kill()
        rec.stop_all(timeout_s=5)
