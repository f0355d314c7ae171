"""The rules under the doctor: KFD mode switch in the simulated node, version parsing, the sandbox,
the simulated ROCm rules, the set-fault knobs, and the real-node path on a machine without ROCm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cli_process
import pytest

from gpu_sharing.cli.main import main
from gpu_sharing.doctor.checks import version_tuple
from gpu_sharing.doctor.kernel_behaviour import mode_from_versions
from gpu_sharing.doctor.permissions import sandbox_read_only
from gpu_sharing.doctor.probe import flags_in_help, json_framing, parse_amd_smi_version
from gpu_sharing.doctor.vllm_flags import flags_from_metadata, serve_flags
from gpu_sharing.runtime.launch_spec import vllm_flags
from simulator.node import SimError, SimNode
from simulator.node_facts import import_amdsmi_outcome, masked_kernel_run

ROOT = Path(__file__).resolve().parents[2]


def test_strict_kfd_blocks_every_gpu_and_cgroup_exclusion_only_the_allowed_ones(tmp_path):
    node = SimNode.create(tmp_path, "MI300X", 2)
    assert node.state()["kfd_mode_switch"] == "strict"
    node.open_kfd(5001, "holder", [0])
    with pytest.raises(SimError) as e:
        node.set_compute_mode(1, "DPX")
    assert e.value.code == "BUSY" and "pid 5001" in e.value.message
    node.set_kfd_mode_switch("cgroup_exclusion")
    assert node.set_compute_mode(1, "DPX") is True
    with pytest.raises(SimError):
        node.set_compute_mode(0, "DPX")  # its own cgroup includes GPU 0
    node.open_kfd(5002, "no-cgroup", None)  # no device cgroup: a pdd on every GPU
    with pytest.raises(SimError):
        node.set_compute_mode(1, "SPX")
    node.release_process(5002)
    node.release_process(5001)
    node.claim_memory(0, 5003, "vllm", 1 << 30, synthetic=True)  # a vLLM with no device cgroup: a KFD context
    with pytest.raises(SimError):                               # on every GPU (kfd_init_apertures), so it blocks
        node.set_compute_mode(1, "SPX")
    node.release_process(5003)
    assert node.set_compute_mode(1, "SPX") is True
    with pytest.raises(ValueError):
        node.set_kfd_mode_switch("lenient")


@pytest.mark.parametrize("kernel, dkms, mode", [
    ("6.8.0-60-generic", None, "strict"), ("6.16.9", None, "strict"), ("6.17.0", None, "cgroup_exclusion"),
    ("6.18.44-fc-v782", None, "cgroup_exclusion"), ("6.8.0-60-generic", "6.16.13", None), ("garbage", None, None),
])
def test_kfd_mode_from_versions(kernel, dkms, mode):
    assert mode_from_versions(kernel, dkms)[0] == mode


def test_version_tuple_and_sandbox_rule():
    assert version_tuple("6.8.0-60-generic") == (6, 8, 0)
    assert version_tuple("26.2.1+fc0010cf6a") == (26, 2, 1)
    assert version_tuple("N/A") is None
    assert sandbox_read_only("/home/ops/.cache/huggingface") and sandbox_read_only("/etc/gpu-sharing/x")
    assert not sandbox_read_only("/var/lib/gpu-sharing/logs") and not sandbox_read_only("/srv/models")
    assert not sandbox_read_only("/homework")


def test_amd_smi_output_parsers():
    v = parse_amd_smi_version('[{"tool": "AMDSMI Tool", "version": "26.2.1", "rocm_version": "7.2.0"}]')
    assert v["rocm_version"] == "7.2.0"
    assert parse_amd_smi_version("AMDSMI Tool: 26.2.1 | ...") is None
    assert json_framing('{"gpu_data": []}') == "gpu_data"
    assert json_framing('[{"gpu": 0}]') == "bare" and json_framing("{") == "invalid"
    assert flags_in_help("  --max-num-seqs MAX_NUM_SEQS\n  --enable-lora, --no-enable-lora  x--y") == \
        {"--max-num-seqs", "--enable-lora", "--no-enable-lora"}


def test_flag_metadata_falls_back_to_the_033_flag_list_and_reads_the_json_shape():
    if not (ROOT / "gpu_sharing" / "data" / "vllm_serve_flags.json").exists():
        assert serve_flags() == vllm_flags()
    assert "--gpu-memory-utilization" in serve_flags()
    meta = {"vllm_version": "0.33.0", "flags": {
        "--enable-prefix-caching": {"action": "enable_disable", "negation": "--no-enable-prefix-caching", "aliases": []},
        "--tensor-parallel-size": {"action": "store", "negation": None, "aliases": ["-tp"]},
        "--model-loader-extra-config": {"aliases": ["--model-loader-config"]}}}
    assert flags_from_metadata(meta) == {"--enable-prefix-caching", "--no-enable-prefix-caching",
                                         "--tensor-parallel-size", "--model-loader-extra-config",
                                         "--model-loader-config"}


def test_simulated_amdsmi_import_rule():
    assert import_amdsmi_outcome({"knobs": {}}) == ("ok", "")
    kind, msg = import_amdsmi_outcome({"knobs": {"version.rocm": "6.4.3", "version.amdsmi_wheel": "7.0.2"}})
    assert kind == "skew" and "undefined symbol: amdsmi_gpu_driver_reload" in msg
    assert import_amdsmi_outcome({"knobs": {"version.rocm": None}})[0] == "missing"


def test_simulated_cu_mask_rule_right_and_wrong_device():
    parts = [{"hip_index": i, "cu_count": 38} for i in range(8)]
    env = {"HIP_VISIBLE_DEVICES": "3", "HSA_CU_MASK": "0:0-18"}
    right = masked_kernel_run({"knobs": {}}, parts, env)
    assert right["hip_index"] == 3 and right["cus"] == list(range(19))
    wrong = masked_kernel_run({"knobs": {"cu_mask_wrong_device": True}}, parts, env)
    assert wrong["hip_index"] == 3 and wrong["cus"] == list(range(38)) and wrong["mask_target"] == 0


def test_set_fault_knobs_from_the_cli(tmp_path, capsys):
    node = SimNode.create(tmp_path, "MI300X", 1)
    assert main(["simulator", "set-fault", "--sim-state", str(tmp_path), "--knob", "version.amdgpu=null",
                 "--knob", 'device.memory_caps=["NPS1"]', "--knob", "version.kernel=6.17.0",
                 "--kfd-mode-switch", "cgroup_exclusion"]) == 0
    st = node.state()
    assert st["knobs"] == {"version.amdgpu": None, "device.memory_caps": ["NPS1"], "version.kernel": "6.17.0"}
    assert st["kfd_mode_switch"] == "cgroup_exclusion"
    assert main(["simulator", "set-fault", "--sim-state", str(tmp_path), "--knob", "nope=1"]) == 2
    assert main(["simulator", "set-fault", "--sim-state", str(tmp_path), "set_compute"]) == 2
    assert "unknown knob" in capsys.readouterr().err


def test_fake_amd_smi_version_prints_the_real_line(tmp_path, capsys, monkeypatch):
    from simulator import amd_smi_cli

    SimNode.create(tmp_path, "MI300X", 1)
    monkeypatch.setenv("GPU_SHARING_SIM_STATE", str(tmp_path))
    import simulator.fake_amdsmi as fake
    fake.configure(None)
    assert amd_smi_cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip() == ("AMDSMI Tool: 26.2.1+fc0010cf6a | AMDSMI Library version: 26.2.1 | "
                                               "ROCm version: 7.2.0 | amdgpu version: 6.16.13 | amd_hsmp version: N/A")


@pytest.mark.skipif(Path("/opt/rocm").exists() or Path("/sys/module/amdgpu").exists(), reason="this node has ROCm")
def test_real_node_without_rocm_exits_1_with_install_hints_and_no_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"version: v1\nnode:\n  state_dir: {tmp_path}/state\n")
    env = {k: v for k, v in os.environ.items() if k != "GPU_SHARING_SIM_STATE"}
    r = cli_process.run(["doctor", "-c", str(cfg), "--json"], tmp_path, env=env, timeout=120)
    assert r.poll() == 1, r.stderr
    assert "Traceback" not in r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["rocm"]["status"] == "FAIL" and "amdgpu-install" in checks["rocm"]["fix"]
    assert checks["amdsmi-library"]["status"] == "FAIL" and "amd-smi-lib" in checks["amdsmi-library"]["fix"]
    assert checks["gpu-model"]["status"] == "FAIL"


def test_node_facts_default_to_the_safe_strict_node_drain(tmp_path):
    from gpu_sharing.hardware.node_facts import Drain, KfdModeSwitch, NodeFacts, load_node_facts, save_node_facts

    assert load_node_facts(tmp_path) == NodeFacts()  # missing: strict, whole-node drain
    (tmp_path / "node-facts.json").write_text("{broken")
    assert load_node_facts(tmp_path).drain == Drain.NODE
    save_node_facts(tmp_path, NodeFacts(KfdModeSwitch.CGROUP_EXCLUSION, Drain.GPU, True))
    assert load_node_facts(tmp_path) == NodeFacts(KfdModeSwitch.CGROUP_EXCLUSION, Drain.GPU, True)


def test_vllm_memory_log_parsing_and_comparison():
    from gpu_sharing.doctor.vllm_memory import GIB, compare, parse_memory_log
    from gpu_sharing.sizing.types import ModelSize

    log = ("(EngineCore pid=1) INFO [gpu_model_runner.py:2001] Model loading took 15.3001 GiB and 12.5 seconds\n"
           "(EngineCore pid=1) INFO [gpu_worker.py:330] Available KV cache memory: 1.00 GiB\n"
           "(EngineCore pid=1) INFO [gpu_model_runner.py:3000] Graph capturing finished in 8 secs, took 0.52 GiB\n"
           "(EngineCore pid=1) INFO [gpu_worker.py:330] Available KV cache memory: 150.32 GiB\n")
    got = parse_memory_log(log)
    assert got == {"weights": int(15.3001 * GIB), "graph": int(0.52 * GIB), "kv": int(150.32 * GIB)}
    size = ModelSize(param_count=8, weights_bytes=15 * GIB, weights_bytes_per_rank=15 * GIB, kv_bytes_per_token=1,
                     kv_tokens=1, kv_bytes=140 * GIB, activation_bytes=5 * GIB, runtime_overhead_bytes=GIB // 2 * 3,
                     total_bytes_per_rank=161 * GIB, tp=1, source="estimate")
    assert compare(size, got) == []  # weights +2 % (ROCm), graph under the runtime overhead, KV larger
    problems = compare(size, {**got, "weights": 17 * GIB, "kv": 100 * GIB})
    assert len(problems) == 2 and "weights 17.00 GiB > predicted 15.00" in problems[0] and "KV pool 100.00" in problems[1]


def test_unreadable_simulated_node_is_an_error_line_not_a_traceback(tmp_path, capsys):
    SimNode.create(tmp_path, "MI300X", 1)
    (tmp_path / "node.json").write_text("{bad")
    assert main(["doctor", "--simulate", "--sim-state", str(tmp_path), "-c", str(ROOT / "config/gpu-sharing.yaml")]) == 1
    assert "simulated node cannot be read" in capsys.readouterr().err
