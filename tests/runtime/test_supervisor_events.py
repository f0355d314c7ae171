"""Every supervisor transition is an event: state changes, crash (exit code, cause, backoff), restart,
FAILED; an operator restart clears FAILED and is not a crash. Fake clock and processes."""

from __future__ import annotations

from gpu_sharing.config.schema import VllmSettings
from gpu_sharing.runtime.events import Event, EventKind, EventStream
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.supervisor import Supervisor

from supervisor_fakes import FakeClock, FakeHealth, FakeSpawner, launch

S = InstanceState
URL = "http://127.0.0.1:8100"


def make(tmp_path, max_restarts: int = 1):
    clock, spawner, health = FakeClock(), FakeSpawner(), FakeHealth()
    health.healthy.add(URL)
    events: list[Event] = []
    stream = EventStream(wall_clock=clock)
    stream.subscribe(events.append)
    vllm = VllmSettings(max_restarts=max_restarts, backoff_initial_s=2, backoff_max_s=10, stop_grace_s=5)
    sup = Supervisor(vllm, log_dir=tmp_path, clock=clock, wall_clock=clock, spawner=spawner, health_checker=health,
                     events=stream)
    return sup, clock, spawner, events


def run_until(sup, clock, iid, target, steps=200):
    for _ in range(steps):
        if sup.state_of(iid) == target:
            return
        clock.advance(0.5)
        sup.tick()
    raise AssertionError(f"{iid} never reached {target}; at {sup.state_of(iid)}")


def test_crash_restart_and_failed_are_events(tmp_path):
    sup, clock, spawner, events = make(tmp_path)
    (tmp_path / "a-0.log").write_text("Traceback (most recent call last):\nValueError: boom\n")
    sup.add(launch("a-0"))
    run_until(sup, clock, "a-0", S.READY)
    moves = [(e.from_state, e.to_state) for e in events if e.kind == EventKind.STATE]
    assert moves == [("PENDING", "STAGING"), ("STAGING", "STARTING"), ("STARTING", "READY")]
    assert all(e.time == clock.now or e.time <= clock.now for e in events) and all(e.time for e in events)

    spawner.procs("a-0")[-1].crash(-9)
    sup.tick()
    crash = [e for e in events if e.kind == EventKind.CRASH]
    assert len(crash) == 1 and crash[0].exit_code == -9 and crash[0].backoff_s == 2
    assert crash[0].instance_id == "a-0" and crash[0].model == "a"
    line = crash[0].line()
    assert line.startswith("crash instance=a-0 model=a: exit code -9, restarting in 2s") and "boom" in line
    run_until(sup, clock, "a-0", S.READY)
    assert [e.message for e in events if e.kind == EventKind.RESTART] == ["starting again (restart 1)"]

    spawner.procs("a-0")[-1].crash(1)  # second failure in the window, max_restarts=1
    sup.tick()
    assert sup.state_of("a-0") == S.FAILED
    failed = [e for e in events if e.kind == EventKind.FAILED]
    assert len(failed) == 1 and "max_restarts=1" in failed[0].message and failed[0].exit_code == 1


def test_operator_restart_clears_failed_and_history(tmp_path):
    sup, clock, spawner, events = make(tmp_path, max_restarts=0)
    sup.add(launch("a-0"))
    run_until(sup, clock, "a-0", S.READY)
    spawner.procs("a-0")[-1].crash(1)
    sup.tick()
    assert sup.state_of("a-0") == S.FAILED
    assert sup.restart("a-0") and sup.state_of("a-0") == S.STAGING
    run_until(sup, clock, "a-0", S.READY)
    assert [e.kind for e in events if e.kind == EventKind.OPERATOR_RESTART] == [EventKind.OPERATOR_RESTART]
    assert not sup.restart("nope-0")


def test_operator_restart_of_a_live_instance_is_not_a_crash(tmp_path):
    sup, clock, spawner, events = make(tmp_path, max_restarts=0)
    sup.add(launch("a-0"))
    run_until(sup, clock, "a-0", S.READY)
    first = spawner.procs("a-0")[-1]
    assert sup.restart("a-0") and sup.state_of("a-0") == S.STOPPING
    sup.tick()  # the fake exits on SIGTERM: STOPPED, then STAGING at once
    assert sup.state_of("a-0") == S.STAGING
    run_until(sup, clock, "a-0", S.READY)
    assert spawner.procs("a-0")[-1] is not first
    assert not [e for e in events if e.kind in (EventKind.CRASH, EventKind.FAILED)]


def test_a_failing_subscriber_does_not_hide_events():
    got: list[Event] = []
    stream = EventStream(wall_clock=lambda: 5.0)

    def broken(_e: Event) -> None:
        raise RuntimeError("log handler broke")
    stream.subscribe(broken)
    stream.subscribe(got.append)
    stream.emit(Event(EventKind.HOLD, "held", model="m"))
    assert got[0].time == 5.0 and got[0].as_dict() == {"kind": "hold", "message": "held", "model": "m", "time": 5.0}
