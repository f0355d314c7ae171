"""ROCm's device numbering in the simulator (simulator/cu_mask_check.py rules D1-D4), and the daemon's
visibility variables checked against it for every node device and both launchers."""

from __future__ import annotations

import pytest

from gpu_sharing.config.schema import Config, LauncherKind
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.reconcile.launch import build_launch
from simulator.cu_mask_check import VisibilityError, effective_cu_masks, process_devices

from reconcile_fakes import RecordingBackend, placement

NODE = list(range(16))  # 2 x MI300X in CPX


def test_hip_visible_devices_does_not_renumber_the_cu_mask():
    env = {"HIP_VISIBLE_DEVICES": "8", "HSA_CU_MASK": "0:0-18"}
    assert process_devices(env, NODE) == [8]
    assert effective_cu_masks(env, NODE) == {0: frozenset(range(19))}  # node device 0, not 8


def test_rocr_visible_devices_renumbers_devices_and_the_mask():
    env = {"ROCR_VISIBLE_DEVICES": "9,8", "HSA_CU_MASK": "0-1:0-18"}
    assert process_devices(env, NODE) == [9, 8]
    assert effective_cu_masks(env, NODE) == {9: frozenset(range(19)), 8: frozenset(range(19))}
    env = {"ROCR_VISIBLE_DEVICES": "8,9", "HIP_VISIBLE_DEVICES": "1"}
    assert process_devices(env, NODE) == [9]  # HIP indices count ROCr's devices


def test_device_cgroup_leaves_one_device_numbered_zero():
    assert process_devices({}, [12]) == [12]
    assert effective_cu_masks({"HSA_CU_MASK": "0:0-9"}, [12]) == {12: frozenset(range(10))}
    with pytest.raises(VisibilityError, match="does not exist"):
        process_devices({"HIP_VISIBLE_DEVICES": "12"}, [12])
    with pytest.raises(VisibilityError, match="does not exist"):
        process_devices({"ROCR_VISIBLE_DEVICES": "12"}, [12])


@pytest.mark.parametrize("launcher", [LauncherKind.DIRECT, LauncherKind.SYSTEMD_RUN])
@pytest.mark.parametrize("gpu, part", [(0, 0), (0, 5), (1, 0), (1, 7)])
def test_launch_env_masks_the_instances_own_device(launcher, gpu, part):
    inv = RecordingBackend({0: C.CPX, 1: C.CPX}).inventory()
    cfg = Config.model_validate({"version": "v1", "node": {"launcher": launcher.value},
                                 "models": [{"name": "a", "source": "org/a"}]})
    p = placement("a-0", ((gpu, part),))
    partition = inv.partition(p.partitions[0])
    launch = build_launch(p, [partition], 20000, "0:0-18", inv, config=cfg, fingerprint="x")
    env = dict(launch.env)
    node_index = partition.hip_index
    # direct: ROCr sees the whole node; systemd-run: its device cgroup allows only the instance's render node
    accessible = NODE if launcher is LauncherKind.DIRECT else [node_index]
    assert process_devices(env, accessible) == [node_index]
    assert effective_cu_masks(env, accessible) == {node_index: frozenset(range(19))}
    if launcher is LauncherKind.SYSTEMD_RUN:
        assert f"--setenv=ROCR_VISIBLE_DEVICES=0" in launch.argv
        assert f"--property=DeviceAllow=/dev/dri/{partition.render_node} rw" in launch.argv
