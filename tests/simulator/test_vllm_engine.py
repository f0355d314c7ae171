"""The fake vLLM copies V1's process layout: EngineCore / one worker per rank hold the VRAM, in the
API server's process group; a device cgroup is recorded for the KFD rule; ROCm's numbering decides
the devices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from simulator.node import SimNode
from simulator.vllm_engine import DEVICE_CGROUP_ENV

from test_fake_vllm import free_port, wait_health


def serve(state, *args, env):
    e = {**os.environ, "GPU_SHARING_SIM_STATE": str(state), "GPU_SHARING_FAKE_STARTUP_S": "0.1", **env}
    e.pop("HIP_VISIBLE_DEVICES", None)
    return subprocess.Popen([sys.executable, "-m", "simulator.vllm_server", "serve", *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture
def node(tmp_path):
    return SimNode.create(tmp_path, "MI300X", 2, compute_mode="CPX")


def test_tp2_workers_hold_the_memory_of_their_rank_and_leave_with_the_server(node, tmp_path):
    port = free_port()
    p = serve(tmp_path, "org/m", "--port", str(port), "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.2",
              env={"ROCR_VISIBLE_DEVICES": "9,10"})
    try:
        wait_health(port, p)
        procs = sorted(node.processes(), key=lambda x: x["hip_index"])
        assert [(x["hip_index"], x["name"]) for x in procs] == [(9, "VLLM::Worker_TP0"), (10, "VLLM::Worker_TP1")]
        assert all(x["pid"] != p.pid and os.getpgid(x["pid"]) == p.pid for x in procs)
        assert all(x["device_cgroup"] is None for x in procs)  # no device cgroup: KFD context on every GPU
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    assert node.processes() == []


def test_device_cgroup_numbers_the_allowed_partition_zero_and_is_recorded(node, tmp_path):
    port = free_port()
    p = serve(tmp_path, "org/m", "--port", str(port), "--gpu-memory-utilization", "0.2",
              env={DEVICE_CGROUP_ENV: "renderD140", "ROCR_VISIBLE_DEVICES": "0", "HSA_CU_MASK": "0:0-18"})
    try:
        wait_health(port, p)
        (proc,) = node.processes()
        assert (proc["hip_index"], proc["name"], proc["device_cgroup"]) == (12, "VLLM::EngineCore", [12])
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # a crash of the whole group: the node reaps the VRAM
        p.wait(timeout=10)


def test_a_node_index_inside_a_device_cgroup_is_refused_like_rocm(node, tmp_path):
    p = serve(tmp_path, "org/m", "--port", str(free_port()), env={DEVICE_CGROUP_ENV: "renderD140",
                                                                   "ROCR_VISIBLE_DEVICES": "12"})
    out, err = p.communicate(timeout=20)
    assert p.returncode == 1 and "ROCR_VISIBLE_DEVICES='12': index 12 does not exist" in err
    assert node.processes() == []
