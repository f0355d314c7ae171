"""Real processes (short-lived, loopback only): own process group, group stop reaches children, logs, ports."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from gpu_sharing.runtime import logs
from gpu_sharing.runtime.ports import PortAllocator, port_is_free
from gpu_sharing.runtime.spawner import (SpawnRequest, SubprocessSpawner, argv_matches, group_pids, pid_alive)

CHILD_AND_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('hello from', flush=True)\n"
    "import os; print(os.environ.get('GS_TEST_VAR'), flush=True)\n"
    "time.sleep(120)\n")


def wait_for(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)  # polling with a deadline (allowed): waits for a real process
    return pred()


def test_spawn_own_group_env_log_and_group_kill(tmp_path: Path):
    req = SpawnRequest(instance_id="x-0", argv=(sys.executable, "-c", CHILD_AND_GRANDCHILD),
                       env={"GS_TEST_VAR": "abc"}, log_path=tmp_path / "x-0.log")
    h = SubprocessSpawner().spawn(req)
    try:
        assert h.pgid == h.pid and os.getpgid(h.pid) == h.pid != os.getpgrp()
        assert wait_for(lambda: len(group_pids(h.pgid)) == 2)
        assert wait_for(lambda: "abc" in (tmp_path / "x-0.log").read_text())
        assert argv_matches(h.pid, req.argv)
        assert not argv_matches(h.pid, req.argv + ("extra",))
        members = group_pids(h.pgid)
        h.signal_group(signal.SIGTERM)
        assert wait_for(lambda: h.poll() is not None and h.group_empty())
        assert not any(pid_alive(p) for p in members)
    finally:
        if h.poll() is None:
            h.signal_group(signal.SIGKILL)


def test_refuses_to_signal_own_group(tmp_path: Path):
    from gpu_sharing.runtime.spawner import AdoptedHandle
    import pytest
    with pytest.raises(ValueError):
        AdoptedHandle(os.getpid(), os.getpgrp()).signal_group(signal.SIGTERM)


def test_log_rotation_at_start_and_by_size(tmp_path: Path):
    path = tmp_path / "a.log"
    path.write_text("first run\n")
    fd = logs.open_for_child(path, max_bytes=1024, backups=2)
    os.write(fd, b"x" * 2000)
    assert (tmp_path / "a.log.1").read_text() == "first run\n"
    assert logs.rotate_if_large(path, 1024, 2)
    os.write(fd, b"tail\n")  # O_APPEND: lands at the start of the truncated file
    os.close(fd)
    assert path.read_bytes() == b"tail\n"
    assert (tmp_path / "a.log.1").stat().st_size == 2000
    assert (tmp_path / "a.log.2").read_text() == "first run\n"
    assert oct(path.stat().st_mode & 0o777) in ("0o640", "0o600")


def test_failure_reason_prefers_error_lines(tmp_path: Path):
    p = tmp_path / "v.log"
    p.write_text("INFO a\nINFO b\nValueError: Free memory on device (2.0/192.0 GiB) is less than desired\nINFO c\n")
    assert "Free memory on device" in logs.failure_reason(p)


def _three_free_ports() -> int:
    """A base port whose next two ports are free too (other processes on the machine use ephemeral ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 2 <= 65535 and all(port_is_free("127.0.0.1", p) for p in (base, base + 1, base + 2)):
            return base
    raise AssertionError("no three consecutive free ports found")


def test_port_allocator_skips_bound_and_assigned():
    base = _three_free_ports()
    with socket.socket() as s:
        s.bind(("127.0.0.1", base))
        s.listen()
        bound = s.getsockname()[1]
        assert not port_is_free("127.0.0.1", bound)
        alloc = PortAllocator((bound, bound + 2), assigned=[bound + 1])
        got = alloc.allocate()
        assert got == bound + 2
        alloc.release(bound + 1)
        assert alloc.allocate() == bound + 1


def test_port_allocator_exhausted_names_range():
    import pytest
    from gpu_sharing.errors import OperationError
    alloc = PortAllocator((20000, 20001), probe=lambda h, p: False)
    with pytest.raises(OperationError, match=r"20000, 20001"):
        alloc.allocate()
