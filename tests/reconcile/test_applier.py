"""Applier order and failure handling over a recording backend, fake spawner and fake clock."""

from __future__ import annotations

import pytest

from gpu_sharing.config.schema import Config
from gpu_sharing.hardware.inventory import GpuProcess
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.reconcile.applier import Applier
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.supervisor import Supervisor

from reconcile_fakes import RecordingBackend, build_launch, make_plan, placement, target
from supervisor_fakes import FakeClock, FakeHealth, FakeSpawner


# A kernel with the KFD cgroup-exclusion change and per-unit device cgroups: only instances on the GPU being
# repartitioned block it (reconcile/drain.py). The strict default drains the node (test below).
ISOLATED = {"kfd_mode_switch": "cgroup_exclusion", "launcher": "systemd-run"}


def setup(tmp_path, modes, busy=None, allow_reload=False, node=None):
    node = ISOLATED if node is None else node
    cfg = Config.model_validate({"version": "v1", "node": {"allow_driver_reload": allow_reload, **node},
                                 "vllm": {"stop_grace_s": 2}})
    clock, spawner, health = FakeClock(), FakeSpawner(), FakeHealth()
    sup = Supervisor(cfg.vllm, log_dir=tmp_path, clock=clock, wall_clock=clock, spawner=spawner, health_checker=health)
    backend = RecordingBackend(modes, busy)
    ports = PortAllocator((9100, 9199), probe=lambda h, p: True)
    applier = Applier(cfg, backend, sup, ports, build_launch, clock=clock, sleep=clock.advance)
    return applier, backend, sup, spawner, health


def test_safe_order_stop_wait_repartition_reread_start(tmp_path):
    applier, backend, sup, spawner, health = setup(tmp_path, {0: C.SPX, 1: C.SPX})
    sup.add(build_launch(placement("old-0", ((0, 0),)), [backend.inventory().partition(placement("old-0", ((0, 0),)).partitions[0])], 9100, None))
    sup.tick()
    old_pid = spawner.procs("old-0")[0].pid
    backend.processes[0] = (GpuProcess(old_pid, "vllm", 5 << 30),)
    keep = build_launch(placement("keep-0", ((1, 0),)), [backend.inventory().gpu(1).partitions[0]], 9101, None)
    sup.add(keep)
    sup.tick()
    keep_pid = spawner.procs("keep-0")[0].pid

    orig_inventory = backend.inventory
    def inventory_releasing():  # the process list empties only after the group was signalled
        if spawner.procs("old-0")[0].exit_code is not None:
            backend.processes[0] = ()
        return orig_inventory()
    backend.inventory = inventory_releasing
    backend.calls.clear()

    plan = make_plan(to_stop=("old-0",), to_repartition=(target(0, C.CPX),),
                     to_start=(placement("new-0", ((0, 3),)), placement("new-1", ((0, 5),))))
    report = applier.apply(plan, backend.inventory())
    assert report.ok, report.failures
    assert report.stopped == ("old-0",) and report.repartitioned == (0,) and report.started == ("new-0", "new-1")
    kinds = [c[0] for c in backend.calls]
    first_set = kinds.index("set_compute_mode")
    assert "inventory" in kinds[:first_set] and "inventory" in kinds[first_set + 1:]
    assert backend.mutating() == [("set_compute_mode", 0, C.CPX)]
    assert sup.state_of("old-0") is None and sup.state_of("new-0") == InstanceState.PENDING
    sup.tick()
    assert [ln.hip_indices for ln in sup.launches() if ln.instance_id.startswith("new")] == [(3,), (5,)]
    assert sup.handle_of("keep-0").pid == keep_pid and spawner.procs("keep-0")[0].signals == []


def test_busy_gpu_keeps_instances_and_skips_its_starts(tmp_path):
    applier, backend, sup, spawner, _ = setup(tmp_path, {0: C.SPX, 1: C.SPX}, busy={0})
    plan = make_plan(to_repartition=(target(0, C.CPX),),
                     to_start=(placement("a-0", ((0, 1),)), placement("b-0", ((1, 0),))))
    report = applier.apply(plan, backend.inventory())
    assert [f.stage for f in report.failures] == ["compute-mode", "start"]
    assert "BUSY" in report.failures[0].message and "GPU 0" in report.failures[1].message
    assert report.started == ("b-0",)


def test_memory_change_refused_without_allow_driver_reload(tmp_path):
    applier, backend, sup, spawner, _ = setup(tmp_path, {0: C.SPX})
    report = applier.apply(make_plan(to_repartition=(target(0, C.CPX, memory_changes=True),)), backend.inventory())
    assert "allow_driver_reload" in report.failures[0].message
    assert backend.mutating() == []


def test_memory_first_then_reload_then_compute(tmp_path):
    applier, backend, sup, spawner, _ = setup(tmp_path, {0: C.SPX}, allow_reload=True)
    report = applier.apply(make_plan(to_repartition=(target(0, C.CPX, memory_changes=True),)), backend.inventory())
    assert report.ok
    assert [c[0] for c in backend.mutating()] == ["set_memory_mode", "reload_driver", "set_compute_mode"]


def test_converged_plan_makes_zero_mutating_calls(tmp_path):
    applier, backend, sup, spawner, _ = setup(tmp_path, {0: C.CPX})
    report = applier.apply(make_plan(unchanged=("a-0",)), backend.inventory())
    assert report.ok and report.actions == 0 and backend.mutating() == [] and report.mutating_calls == 0


def test_start_failure_is_recorded_and_port_released(tmp_path):
    applier, backend, sup, spawner, _ = setup(tmp_path, {0: C.SPX})
    report = applier.apply(make_plan(to_start=(placement("a-0", ((0, 7),)),)), backend.inventory())
    assert report.failures[0].target == "a-0" and "0.7" in report.failures[0].message
    assert applier.ports.assigned == frozenset()


def test_strict_kernel_drains_the_node_for_a_compute_change_and_restores_what_the_plan_keeps(tmp_path):
    applier, backend, sup, spawner, health = setup(tmp_path, {0: C.SPX, 1: C.SPX}, node={})
    keep_placement = placement("keep-0", ((1, 0),))
    sup.add(build_launch(keep_placement, [backend.inventory().gpu(1).partitions[0]], 9101, None))
    sup.tick()
    keep_pid = spawner.procs("keep-0")[0].pid
    plan = make_plan(to_repartition=(target(0, C.CPX),), to_start=(placement("new-0", ((0, 3),)),))
    plan = plan.__class__(**{**plan.__dict__, "placements": plan.placements + (keep_placement,)})
    report = applier.apply(plan, backend.inventory())
    assert report.ok, report.failures
    assert report.stopped == ("keep-0",) and report.started == ("new-0", "keep-0")
    assert spawner.procs("keep-0")[0].exit_code is not None  # the old process was stopped before the switch
    assert [c[0] for c in backend.calls if c[0] == "set_compute_mode"] == ["set_compute_mode"]
    sup.tick()
    assert sup.state_of("keep-0") is not None and spawner.procs("keep-0")[-1].pid != keep_pid
