"""Every doctor check PASSes on a healthy simulated node and FAILs through the simulator's knobs."""

from __future__ import annotations

import json

import pytest

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.sizing import size_model

GIB = 1024**3
ALL_CHECKS = {"kernel", "amdgpu-driver", "rocm", "amdsmi-library", "amd-smi-cli", "vllm", "python", "gpu-model",
              "partition-geometry", "memory-caps", "hive", "privileges", "device-access", "state-dir", "cache-dirs",
              "kfd-mode-switch", "cu-mask", "vllm-memory"}
DEEP = {"cu-mask", "vllm-memory"}


def test_healthy_simulated_node_passes_every_check_and_deep_ones_skip(doctor):
    rc, checks, out = doctor()
    assert rc == 0 and out["ok"] is True
    assert set(checks) == ALL_CHECKS
    for name, c in checks.items():
        assert c["status"] == ("SKIP" if name in DEEP else "PASS"), c
        assert c["source"] or name in DEEP, c
    # every simulated answer names the simulator rule or default it comes from
    assert all("simulat" in c["source"] for c in checks.values() if c["status"] != "SKIP")
    assert "simulator default version.rocm" in checks["rocm"]["source"]
    assert "import_amdsmi_outcome" in checks["amdsmi-library"]["source"]


def test_deep_on_a_healthy_node_measures_the_kfd_behaviour_and_the_cu_mask(doctor, node):
    rc, checks, out = doctor("--deep")
    assert rc == 0
    assert checks["kfd-mode-switch"]["status"] == "PASS"
    assert checks["kfd-mode-switch"]["measured"].startswith("strict: probe pid")
    assert checks["cu-mask"]["status"] == "PASS"
    assert checks["vllm-memory"]["status"] == "SKIP"
    assert out["facts"] == {"kfd_mode_switch": "strict", "drain": "node", "measured": True}
    from gpu_sharing.hardware.node_facts import Drain, KfdModeSwitch, load_node_facts
    saved = load_node_facts(node.state_dir / "daemon")
    assert saved.kfd_mode_switch == KfdModeSwitch.STRICT and saved.drain == Drain.NODE and saved.measured
    st = node.state()
    assert st["processes"] == [] and {g["compute_mode"] for g in st["gpus"]} == {"SPX"}


@pytest.mark.parametrize("knob, value, name, needle", [
    ("version.kernel", "not-a-release", "kernel", "not-a-release"),
    ("amdgpu_loaded", False, "amdgpu-driver", "not loaded"),
    ("version.rocm", "6.2.0", "rocm", "6.2.0"),  # wheel 6.2 too (below): no skew, only the old ROCm
    ("version.rocm", None, "rocm", "no ROCm"),
    ("version.amdsmi_wheel", "7.0.2", "amdsmi-library", "amdsmi_gpu_driver_reload"),
    ("amd_smi_json_framing", "bare", "amd-smi-cli", "framing bare"),
    ("version.python", "3.10.12", "python", "3.10.12"),
    ("device.market_name", "AMD Instinct MI308X", "gpu-model", "MI308X"),
    ("device.vram_per_partition_bytes", 100 * GIB, "partition-geometry", "100.00 GiB"),
    ("device.cu_per_partition", 300, "partition-geometry", "300 CU"),
    ("device.memory_caps", ["NPS1"], "memory-caps", "lacks NPS2,NPS4"),
    ("device.memory_mode_of_gpu", {"1": "NPS4"}, "hive", "NPS1/NPS4"),
    ("devices_accessible", False, "device-access", "/dev/kfd"),
])
def test_each_knob_makes_its_check_fail(doctor, node, knob, value, name, needle):
    if knob == "version.amdsmi_wheel":
        node.set_knob("version.rocm", "6.4.3")  # a 7.0 wheel over ROCm 6.4: the symbol-skew case
        node.set_knob("amd_smi_on_path", False)  # (the CLI fallback has its own test; spare its subprocesses)
    if knob == "version.rocm" and value:
        node.set_knob("version.amdsmi_wheel", value)
    node.set_knob(knob, value)
    rc, checks, out = doctor()
    assert rc == 1 and out["ok"] is False
    assert checks[name]["status"] == "FAIL", checks[name]
    assert needle in checks[name]["measured"]
    assert checks[name]["fix"] and "simulator knob" in checks[name]["source"] or checks[name]["source"]


def test_no_rocm_fails_with_install_hints_instead_of_reading_gpus(doctor, node):
    node.set_knob("version.rocm", None)
    rc, checks, _ = doctor()
    assert rc == 1
    assert "amdgpu-install" in checks["rocm"]["fix"]
    assert checks["amdsmi-library"]["status"] == "FAIL" and "amd-smi-lib" in checks["amdsmi-library"]["fix"]
    assert checks["gpu-model"]["status"] == "FAIL" and "cannot read the GPUs" in checks["gpu-model"]["measured"]


def test_older_wheel_than_rocm_warns_and_cli_alone_is_a_warning_when_the_library_works(doctor, node):
    node.set_knob("version.amdsmi_wheel", "7.0.2")
    node.set_knob("amd_smi_on_path", False)
    rc, checks, _ = doctor()
    assert rc == 0
    assert checks["amdsmi-library"]["status"] == "WARN"
    assert checks["amd-smi-cli"]["status"] == "WARN"


def test_skewed_wheel_falls_back_to_the_cli_backend_like_the_factory(doctor, node):
    node.set_knob("version.amdsmi_wheel", "7.9.0")
    rc, checks, _ = doctor()
    assert rc == 1 and checks["amdsmi-library"]["status"] == "FAIL"
    assert checks["gpu-model"]["status"] == "PASS"  # read through the fake amd-smi executable
    assert checks["memory-caps"]["status"] == "WARN" and "amd-smi-cli" in checks["memory-caps"]["measured"]


def test_vllm_of_another_version_fails_with_the_flags_it_would_reject(doctor, node):
    node.set_knob("version.vllm", "0.34.0")
    rc, checks, _ = doctor()
    assert rc == 0 and checks["vllm"]["status"] == "WARN"
    node.set_knob("vllm_rejects_flags", ["--max-num-seqs", "--block-size"])
    rc, checks, _ = doctor()
    assert rc == 1 and checks["vllm"]["status"] == "FAIL"
    assert "would reject --max-num-seqs" in checks["vllm"]["measured"]
    assert "--block-size" not in checks["vllm"]["measured"]  # not generated for this config


def test_wider_caps_than_the_catalog_only_warn(doctor, node):
    node.set_knob("device.memory_caps", ["NPS1", "NPS2", "NPS4", "NPS8"])
    rc, checks, _ = doctor()
    assert rc == 0 and checks["memory-caps"]["status"] == "WARN" and "NPS8" in checks["memory-caps"]["measured"]


def test_without_root_privileges_fail(doctor, node):
    node.set_root(False)
    rc, checks, _ = doctor()
    assert rc == 1 and checks["privileges"]["status"] == "FAIL" and "CAP_SYS_ADMIN" in checks["privileges"]["measured"]


def test_read_only_state_dir_and_log_dir_fail(doctor, node, tmp_path):
    ro = tmp_path / "ro"
    node.set_knob("read_only_paths", [str(node.state_dir / "daemon"), str(ro)])
    rc, checks, _ = doctor(config=f"version: v1\nvllm:\n  log_dir: {ro}/logs\n")
    assert rc == 1
    assert checks["state-dir"]["status"] == "FAIL" and "not writable" in checks["state-dir"]["measured"]
    assert checks["cache-dirs"]["status"] == "FAIL" and "vllm.log_dir" in checks["cache-dirs"]["measured"]


def test_strict_kfd_fails_when_the_config_relies_on_cgroup_exclusion(doctor, node):
    node.set_knob("version.amdgpu", None)  # in-tree driver: the kernel version decides
    node.set_knob("version.kernel", "6.8.0-60-generic")
    rc, checks, _ = doctor(config="version: v1\nnode:\n  launcher: systemd-run\n")
    assert rc == 1
    c = checks["kfd-mode-switch"]
    assert c["status"] == "FAIL" and c["measured"].startswith("strict") and "6.17" in c["fix"]
    rc, checks, _ = doctor()  # launcher direct: every vLLM blocks every GPU anyway
    assert checks["kfd-mode-switch"]["status"] == "PASS"


def test_deep_probe_contradicting_the_kernel_version_fails(doctor, node):
    node.set_knob("version.amdgpu", None)
    node.set_knob("version.kernel", "6.17.1")  # says cgroup_exclusion
    rc, checks, _ = doctor("--deep")  # the node is strict
    c = checks["kfd-mode-switch"]
    assert rc == 1 and c["status"] == "FAIL" and "versions said cgroup_exclusion" in c["measured"]
    node.set_kfd_mode_switch("cgroup_exclusion")
    rc, checks, out = doctor("--deep", config="version: v1\nnode:\n  launcher: systemd-run\n")
    assert rc == 0 and checks["kfd-mode-switch"]["status"] == "PASS"
    assert "switched to" in checks["kfd-mode-switch"]["measured"]
    assert out["facts"]["drain"] == "gpu"
    from gpu_sharing.hardware.node_facts import Drain, load_node_facts
    assert load_node_facts(node.state_dir / "daemon").drain == Drain.GPU
    assert {g["compute_mode"] for g in node.state()["gpus"]} == {"SPX"}  # restored


def test_cu_mask_on_the_wrong_device_fails(doctor, node):
    node.set_knob("cu_mask_wrong_device", True)
    rc, checks, _ = doctor("--deep")
    c = checks["cu-mask"]
    assert rc == 1 and c["status"] == "FAIL"
    assert "ran on device 1 with 304 CUs" in c["measured"] and "landed on device 0" in c["measured"]


def test_deep_refuses_while_gpu_processes_run(doctor, node, capsys, tmp_path):
    from gpu_sharing.cli.main import main

    node.claim_memory(1, 424242, "vllm", GIB, synthetic=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: v1\n")
    rc = main(["doctor", "--simulate", "--sim-state", str(node.state_dir), "-c", str(cfg), "--deep"])
    err = capsys.readouterr().err
    assert rc == 1 and "refused while 1 GPU process(es) run" in err and "pid 424242" in err


TINY = ('{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, '
        '"intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, '
        '"vocab_size": 32000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}')


def _tiny(max_num_seqs: int, env: str = "") -> str:
    return (f"version: v1\nmodels:\n  - name: tiny\n    source: org/tiny-llama\n    max_model_len: 2048\n"
            f"    max_num_seqs: {max_num_seqs}\n    config_json: {TINY}\n" + (f"    env: {env}\n" if env else ""))


def test_vllm_memory_starts_the_fake_vllm_and_compares_its_kv_pool(doctor, node):
    rc, checks, _ = doctor("--deep", config=_tiny(4))
    c = checks["vllm-memory"]
    assert rc == 0 and c["status"] == "PASS" and "tiny on partition 0.0 (--load-format dummy):" in c["measured"] and " kv " in c["measured"]
    assert node.state()["processes"] == []  # stopped once healthy
    # a vLLM whose activation peak takes more than the launch contract allows (the fake's profile knob,
    # simulator/vllm_memory.py; the fake knows no weights for this non-local model): the KV pool it is left with
    # is half of what the contract planned, so the doctor reports the KV pool as smaller than predicted.
    budget = size_model(ModelSettings(name="tiny", source="org/tiny-llama", max_model_len=2048, max_num_seqs=4,
                                      config_json=json.loads(TINY))).contract.budget
    peak = budget.requested_bytes - budget.kv_bytes // 2
    rc, checks, _ = doctor("--deep", config=_tiny(4, env=f"{{GPU_SHARING_FAKE_PROFILE: '{{\"activation_peak_bytes\": {peak}}}'}}"))
    c = checks["vllm-memory"]
    assert rc == 1 and c["status"] == "FAIL" and "KV pool" in c["measured"]
