"""One controller per state dir: a second daemon, ``apply``, ``stop`` and ``partition set`` refuse, naming the holder;
the lock dies with its holder (SIGKILL included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_sharing.cli import main as cli
from gpu_sharing.runtime.controller_lock import DAEMON_ROLE, ControllerLock, ControllerLockHeld
from simulator.node import SimNode

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from gpu_sharing.runtime.controller_lock import ControllerLock
ControllerLock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the controller lock of <sim>/daemon as the daemon would."""
    procs = []

    def start(state_dir: Path, role: str = DAEMON_ROLE) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir), role], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_second_controller_is_refused_and_named(tmp_path, holder):
    p = holder(tmp_path / "state")
    with pytest.raises(ControllerLockHeld) as e:
        ControllerLock(tmp_path / "state", "test").acquire()
    assert e.value.holder_pid == p.pid and e.value.holder_role == DAEMON_ROLE
    assert f"pid {p.pid}" in str(e.value) and e.value.exit_code == 1


def test_sigkill_of_the_holder_frees_the_lock(tmp_path, holder):
    p = holder(tmp_path / "state")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lock = ControllerLock(tmp_path / "state", "next").acquire()
    assert lock.holder() == (os.getpid(), "next")
    lock.release()


def test_in_process_reacquire_after_release(tmp_path):
    with ControllerLock(tmp_path, "a"):
        with pytest.raises(ControllerLockHeld):
            ControllerLock(tmp_path, "b").acquire()  # flock conflicts across open files, even in one process
    ControllerLock(tmp_path, "c").acquire().release()


@pytest.mark.parametrize("argv", [
    ["apply", "--yes"], ["stop", "--all"], ["partition", "set", "--gpu", "0", "--compute", "CPX"],
    ["run", "--api-port", "0"]])
def test_mutating_commands_refuse_while_the_daemon_holds_the_state_dir(tmp_path, holder, capsys, argv):
    sim = tmp_path / "sim"
    node = SimNode.create(sim, "MI300X", 1, reload_time_s=0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: v1\nmodels: []\n")
    p = holder(sim / "daemon")
    verb, rest = argv[0], argv[1:]
    if verb == "partition":
        full = argv + ["--simulate", "--sim-state", str(sim)]
    else:
        full = [verb, "-c", str(cfg), "--simulate", "--sim-state", str(sim), *rest]
    code = cli.main(full)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"pid {p.pid}" in err and DAEMON_ROLE in err and "Traceback" not in err
    if verb != "run":
        assert "reload" in err  # says how: go through the daemon
    assert node.state()["gpus"][0]["compute_mode"] == "SPX"  # nothing changed
