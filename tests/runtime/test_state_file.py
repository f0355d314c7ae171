"""State file: atomic, private, round-trips; adoption identity (alive + same argv + healthy)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpu_sharing.runtime.state_file import StateEntry, identifiable, read_state, state_path, write_state


def entry(**kw) -> StateEntry:
    base = dict(instance_id="m-0", model="m", replica=0, fingerprint="f1", served_names=("m",), partitions=("0.1",),
                hip_indices=(1,), memory_bytes_per_rank=10, tp=1, pid=None, pgid=None, port=8100,
                url="http://127.0.0.1:8100", argv=("vllm", "serve", "m"), started_at=1.5, state="READY",
                env=(("HIP_VISIBLE_DEVICES", "1"),))
    base.update(kw)
    return StateEntry(**base)


def test_roundtrip_and_mode(tmp_path: Path):
    write_state(tmp_path, [entry(), entry(instance_id="a-0", model="a")])
    st = state_path(tmp_path).stat().st_mode & 0o777
    assert st == 0o600
    got = read_state(tmp_path)
    assert [e.instance_id for e in got] == ["a-0", "m-0"]
    assert got[1] == entry()
    assert not list(tmp_path.glob(".instances.*"))


def test_missing_is_empty_and_corrupt_names_file(tmp_path: Path):
    assert read_state(tmp_path) == []
    state_path(tmp_path).write_text("{not json")
    with pytest.raises(ValueError, match="instances.json"):
        read_state(tmp_path)


def test_identifiable_requires_alive_and_same_argv():
    argv = (sys.executable, "-c", "import time; time.sleep(60)")
    p = subprocess.Popen(list(argv), start_new_session=True)
    try:
        e = entry(pid=p.pid, pgid=p.pid, argv=argv)
        pause, deadline = threading.Event(), time.monotonic() + 10
        while not identifiable(e) and time.monotonic() < deadline:  # a loaded machine may show the argv late
            pause.wait(0.01)
        assert identifiable(e)
        assert not identifiable(entry(pid=p.pid, pgid=p.pid, argv=argv[:-1] + ("other",)))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not identifiable(e)
