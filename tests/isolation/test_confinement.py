"""CPU pinning / user drop preexec (run in real children) and systemd-run argv."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid

import pytest

from gpu_sharing.config.schema import LauncherKind
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.isolation import ComputeLimits, ResourceIsolator, systemd_run_argv, unit_name_for
from gpu_sharing.isolation.confinement import choose_cpus, lookup_user, make_preexec, numa_node_cpus, parse_cpulist

PRINT_AFFINITY = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)), os.getuid(), os.getgid())"]


def fake_sysfs(tmp_path, nodes: dict[int, str]) -> str:
    for n, cpulist in nodes.items():
        d = tmp_path / f"node{n}"
        d.mkdir()
        (d / "cpulist").write_text(cpulist + "\n")
    return str(tmp_path)


def test_cpulist_parsing_and_numa_read(tmp_path):
    assert parse_cpulist("0-3,8-9,12\n") == (0, 1, 2, 3, 8, 9, 12)
    root = fake_sysfs(tmp_path, {0: "0-3", 1: "4-7"})
    assert numa_node_cpus(1, sys_node_dir=root) == (4, 5, 6, 7)
    with pytest.raises(UserError, match="NUMA node 2"):
        numa_node_cpus(2, sys_node_dir=root)


def test_choose_cpus_limits_to_cpu_cores_and_allowed():
    assert choose_cpus([4, 5, 6, 7], cpu_cores=2) == (4, 5)
    assert choose_cpus([4, 5, 6, 7], cpu_cores=None, allowed=[5, 7, 9]) == (5, 7)
    with pytest.raises(UserError, match="cpu_cores 5 is more than the 4"):
        choose_cpus([4, 5, 6, 7], cpu_cores=5)
    with pytest.raises(UserError, match="none of the NUMA node's CPUs"):
        choose_cpus([4, 5], cpu_cores=None, allowed=[0])


def test_preexec_pins_a_real_child_to_the_numa_cpus(tmp_path):
    usable = sorted(os.sched_getaffinity(0))
    root = fake_sysfs(tmp_path, {0: ",".join(map(str, usable))})
    iso = ResourceIsolator(sys_node_dir=root)
    hook = iso.preexec_for(ComputeLimits(cpu_cores=1), numa_node=0)
    assert hook is not None
    out = subprocess.run(PRINT_AFFINITY, preexec_fn=hook, capture_output=True, text=True, check=True).stdout
    assert out.split("]")[0] + "]" == str([usable[0]])


def test_no_preexec_when_nothing_to_do_or_under_systemd(tmp_path):
    root = fake_sysfs(tmp_path, {0: "0"})
    assert ResourceIsolator(sys_node_dir=root).preexec_for(ComputeLimits(numa_local=False), numa_node=0) is None
    sysd = ResourceIsolator(launcher=LauncherKind.SYSTEMD_RUN, sys_node_dir=root)
    assert sysd.preexec_for(ComputeLimits(cpu_cores=1), numa_node=0) is None


def test_user_drop_needs_root():
    user = lookup_user("nobody")
    with pytest.raises(UserError, match="needs the daemon to run as root"):
        make_preexec(cpus=None, user=user, euid=lambda: 1000)
    with pytest.raises(UserError, match="no such user 'no-such-user-x'"):
        lookup_user("no-such-user-x")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_user_drop_in_a_real_child():
    nobody = pwd.getpwnam("nobody")
    hook = make_preexec(cpus=None, user=lookup_user("nobody"))
    out = subprocess.run(["/bin/sh", "-c", "id -u; id -g"], preexec_fn=hook, capture_output=True, text=True,
                         check=True, cwd="/").stdout.split()
    assert out == [str(nobody.pw_uid), str(nobody.pw_gid)]


@pytest.mark.parametrize("iid", ["llama-8b-0", "qwen/7b.r1", "a b", "x_y:z", ".hidden", "ünï"])
def test_unit_name_matches_systemd_escape(iid):
    name = unit_name_for(iid)
    assert name.startswith("gpu-sharing-") and name.endswith(".service")
    tool = shutil.which("systemd-escape")
    if tool is None:
        pytest.skip("systemd-escape not installed")
    expected = subprocess.run([tool, iid], capture_output=True, text=True, check=True).stdout.strip()
    assert name == f"gpu-sharing-{expected}.service"


def test_systemd_run_argv_field_by_field():
    argv = systemd_run_argv(unit_name="gpu-sharing-a.service", argv=["vllm", "serve", "m"],
                            env={"HSA_CU_MASK": "0:0-18", "HIP_VISIBLE_DEVICES": "0"},
                            device_nodes=["/dev/dri/renderD131"], cpus=[0, 1, 2, 3, 8],
                            memory_max_bytes=64 * 2**30, user="vllm", working_dir="/srv")
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    assert opts[0] == "systemd-run" and cmd == ["vllm", "serve", "m"]
    assert "--unit=gpu-sharing-a.service" in opts and "--collect" in opts and "--pipe" in opts
    assert "--property=DevicePolicy=closed" in opts
    assert [o for o in opts if o.startswith("--property=DeviceAllow=")] == [
        "--property=DeviceAllow=/dev/dri/renderD131 rw", "--property=DeviceAllow=/dev/kfd rw"]
    assert "--property=AllowedCPUs=0-3,8" in opts
    assert f"--property=MemoryMax={64 * 2**30}" in opts
    assert "--property=User=vllm" in opts and "--working-directory=/srv" in opts
    assert [o for o in opts if o.startswith("--setenv=")] == ["--setenv=HIP_VISIBLE_DEVICES=0", "--setenv=HSA_CU_MASK=0:0-18"]


def test_systemd_run_argv_omits_unset_limits_and_rejects_bad_input():
    argv = systemd_run_argv(unit_name="gpu-sharing-a.service", argv=["x"], env={}, device_nodes=[],
                            cpus=None, memory_max_bytes=None, user=None)
    assert not any(o.startswith(("--property=AllowedCPUs", "--property=MemoryMax", "--property=User")) for o in argv)
    detached = systemd_run_argv(unit_name="gpu-sharing-a.service", argv=["x"], env={}, device_nodes=[],
                                cpus=None, memory_max_bytes=None, user=None, attach=False)
    assert "--pipe" not in detached
    with pytest.raises(UserError, match="must be a /dev path"):
        systemd_run_argv(unit_name="gpu-sharing-a.service", argv=["x"], env={}, device_nodes=["renderD128"],
                         cpus=None, memory_max_bytes=None, user=None)
    with pytest.raises(UserError, match="empty command"):
        systemd_run_argv(unit_name="gpu-sharing-a.service", argv=[], env={}, device_nodes=[],
                         cpus=None, memory_max_bytes=None, user=None)


def test_isolator_wraps_argv_with_the_partitions_render_nodes(tmp_path):
    root = fake_sysfs(tmp_path, {0: ",".join(map(str, sorted(os.sched_getaffinity(0))))})
    part = LogicalPartition(gpu=0, index=3, hip_index=3, render_node="renderD131", cu_count=38, xcc_count=1,
                            vram_total_bytes=24 * 2**30, vram_used_bytes=0)
    iso = ResourceIsolator(launcher=LauncherKind.SYSTEMD_RUN, sys_node_dir=root)
    argv = iso.wrap_argv(instance_id="m-0", argv=["vllm", "serve"], env={"A": "1"},
                         limits=ComputeLimits(host_memory_bytes=2**30), partitions=[part], numa_node=0)
    assert argv[1] == "--unit=gpu-sharing-m\\x2d0.service"
    assert "--property=DeviceAllow=/dev/dri/renderD131 rw" in argv and f"--property=MemoryMax={2**30}" in argv
    assert ResourceIsolator(sys_node_dir=root).wrap_argv(
        instance_id="m-0", argv=["vllm"], env={}, limits=ComputeLimits(), partitions=[part], numa_node=0) == ["vllm"]


@pytest.mark.skipif(not os.path.isdir("/run/systemd/system"),
                    reason="systemd is not PID 1 here (/run/systemd/system missing): no transient units possible")
def test_real_transient_unit_runs():
    unit = unit_name_for(f"test-{uuid.uuid4().hex[:8]}")
    argv = systemd_run_argv(unit_name=unit, argv=["/bin/true"], env={"X": "1"}, device_nodes=[],
                            cpus=sorted(os.sched_getaffinity(0))[:1], memory_max_bytes=256 * 2**20, user=None)
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).returncode == 0
