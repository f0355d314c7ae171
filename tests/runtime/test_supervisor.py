"""Supervisor lifecycle with a fake clock and fake processes: no real sleeps, milliseconds per test."""

from __future__ import annotations

import signal

import pytest

from gpu_sharing.config.schema import VllmSettings
from gpu_sharing.runtime.instance_state import (IllegalTransition, InstanceState, backoff_delay_s,
                                                check_transition)
from gpu_sharing.runtime.supervisor import Supervisor

from supervisor_fakes import FakeClock, FakeHealth, FakeSpawner, launch

S = InstanceState


@pytest.fixture
def env(tmp_path):
    clock, spawner, health = FakeClock(), FakeSpawner(), FakeHealth()
    vllm = VllmSettings(startup_timeout_s=60, stop_grace_s=5, max_restarts=3, restart_window_s=600,
                        backoff_initial_s=2, backoff_max_s=10, health_interval_s=5)
    sup = Supervisor(vllm, log_dir=tmp_path, clock=clock, wall_clock=clock, spawner=spawner, health_checker=health)
    return sup, clock, spawner, health


def state(sup, iid):
    return sup.state_of(iid)


def test_illegal_transition_names_instance_and_states():
    with pytest.raises(IllegalTransition) as e:
        check_transition("llama-0", S.STOPPED, S.READY)
    assert "llama-0" in str(e.value) and "STOPPED -> READY" in str(e.value)


@pytest.mark.parametrize("n,expected", [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (50, 10.0)])
def test_backoff_is_capped_exponential(n, expected):
    assert backoff_delay_s(n, 2.0, 10.0) == expected


def test_ready_only_after_health(env):
    sup, clock, spawner, health = env
    sup.add(launch("a-0"))
    sup.tick()
    assert state(sup, "a-0") == S.STARTING
    clock.advance(1)
    sup.tick()
    assert state(sup, "a-0") == S.STARTING
    health.healthy.add("http://127.0.0.1:8100")
    clock.advance(1)
    sup.tick()
    assert state(sup, "a-0") == S.READY
    st = sup.statuses()[0]
    assert st.pid == spawner.procs("a-0")[0].pid and st.ready_at == clock.now


def test_start_timeout_kills_and_backs_off(env):
    sup, clock, spawner, _ = env
    sup.add(launch("a-0"))
    sup.tick()
    clock.advance(60)
    sup.tick()
    proc = spawner.procs("a-0")[0]
    assert state(sup, "a-0") == S.BACKOFF
    assert signal.SIGKILL in proc.signals
    assert "startup_timeout_s=60" in sup.statuses()[0].last_error


def test_crash_backoff_doubles_then_failed_after_max_restarts(env):
    sup, clock, spawner, health = env
    health.healthy.add("http://127.0.0.1:8100")
    sup.add(launch("a-0"))
    sup.tick()
    sup.tick()
    assert state(sup, "a-0") == S.READY
    delays = []
    for _ in range(3):
        spawner.procs("a-0")[-1].crash(1)
        sup.tick()
        assert state(sup, "a-0") == S.BACKOFF
        t0 = clock.now
        while state(sup, "a-0") == S.BACKOFF:
            clock.advance(0.5)
            sup.tick()
        delays.append(clock.now - t0)
        sup.tick()  # STAGING -> STARTING
        sup.tick()  # STARTING -> READY
        assert state(sup, "a-0") == S.READY
    assert delays == [2.0, 4.0, 8.0]
    spawner.procs("a-0")[-1].crash(1)
    sup.tick()
    assert state(sup, "a-0") == S.FAILED
    st = sup.statuses()[0]
    assert st.restarts == 3 and "max_restarts=3" in st.last_error
    assert len(spawner.spawned) == 4


def test_restart_window_forgets_old_failures(env):
    sup, clock, spawner, health = env
    health.healthy.add("http://127.0.0.1:8100")
    sup.add(launch("a-0"))
    for _ in range(6):  # more crashes than max_restarts, but each one far apart
        sup.tick()
        sup.tick()
        assert state(sup, "a-0") == S.READY
        spawner.procs("a-0")[-1].crash(1)
        sup.tick()
        assert state(sup, "a-0") == S.BACKOFF
        clock.advance(700)
        sup.tick()
    assert state(sup, "a-0") != S.FAILED


def test_crash_reason_includes_log_tail(env, tmp_path):
    sup, clock, spawner, _ = env
    sup.add(launch("a-0"))
    sup.tick()
    (tmp_path / "a-0.log").write_text("INFO loading\nValueError: Free memory on device (1.0/2.0 GiB) is less than desired\n")
    spawner.procs("a-0")[0].crash(1)
    sup.tick()
    assert "Free memory on device" in sup.statuses()[0].last_error


def test_stop_sends_term_then_kill_after_grace(env):
    sup, clock, spawner, health = env
    spawner.ignore_term = True
    sup.add(launch("a-0"))
    sup.tick()
    sup.stop("a-0")
    proc = spawner.procs("a-0")[0]
    assert proc.signals == [signal.SIGTERM] and state(sup, "a-0") == S.STOPPING
    clock.advance(4.9)
    sup.tick()
    assert proc.signals == [signal.SIGTERM]
    clock.advance(0.2)
    sup.tick()
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    sup.tick()
    assert state(sup, "a-0") == S.STOPPED


def test_partition_neighbours_start_one_at_a_time(env):
    sup, clock, spawner, health = env
    sup.add(launch("a-0", ("0.1",), 8100))
    sup.add(launch("b-0", ("0.1",), 8101))
    sup.add(launch("c-0", ("0.2",), 8102))
    sup.tick()
    assert [r.instance_id for r, _ in spawner.spawned] == ["a-0", "c-0"]
    assert state(sup, "b-0") == S.STAGING
    clock.advance(1)
    sup.tick()
    assert state(sup, "b-0") == S.STAGING
    health.healthy.add("http://127.0.0.1:8100")
    clock.advance(1)
    sup.tick()  # a-0 READY
    sup.tick()  # b-0 may start now
    assert state(sup, "b-0") == S.STARTING


def test_spawn_error_is_recorded_not_raised(env):
    sup, clock, spawner, _ = env
    spawner.fail_with = FileNotFoundError(2, "No such file or directory", "vllm")
    sup.add(launch("a-0"))
    sup.tick()
    st = sup.statuses()[0]
    assert st.state == S.BACKOFF and "cannot start vllm" in st.last_error


def test_hung_ready_instance_is_restarted(env):
    sup, clock, spawner, health = env
    health.healthy.add("http://127.0.0.1:8100")
    sup.add(launch("a-0"))
    sup.tick()
    sup.tick()
    health.healthy.clear()
    for _ in range(3):
        clock.advance(5)
        sup.tick()
    assert state(sup, "a-0") == S.BACKOFF
    assert signal.SIGKILL in spawner.procs("a-0")[0].signals


def test_on_ready_callback_gets_status(tmp_path):
    clock, spawner, health = FakeClock(), FakeSpawner(), FakeHealth()
    seen = []
    sup = Supervisor(VllmSettings(), log_dir=tmp_path, clock=clock, wall_clock=clock, spawner=spawner,
                     health_checker=health, on_ready=seen.append)
    health.healthy.add("http://127.0.0.1:8100")
    sup.add(launch("a-0"))
    sup.tick()
    sup.tick()
    assert [s.instance_id for s in seen] == ["a-0"] and seen[0].state == S.READY
