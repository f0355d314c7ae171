"""What the simulated node reports about its software stack, devices and permissions, and the knobs
that make those reports differ from what gpu-sharing assumes.

Why a separate module: ``gpu-sharing doctor --simulate`` must be able to fail every check for the
reason it would fail on a real node, so every fact the doctor reads has a default taken from a real
node (source in ``DEFAULTS``) and a knob in the node state (``state["knobs"]``, set with
``gpu-sharing simulator set-fault --knob NAME=VALUE``). The rules that turn knobs into behaviour
(``import amdsmi`` with a skewed wheel, ``HSA_CU_MASK`` landing on the wrong device) live here too,
each citing its source. node.py only stores the knobs.
"""

from __future__ import annotations

import platform
from typing import Any

from simulator.cu_mask_check import CuMaskError, parse_hsa_cu_mask

# amd-smi 26.2.1 = ROCm 7.2.0 with amdgpu DKMS 6.16.13: the line `amd-smi version` printed on a real node,
# quoted in a ROCm GitHub issue (2026): "AMDSMI Tool: 26.2.1+fc0010cf6a | AMDSMI Library version: 26.2.1 |
# ROCm version: 7.2.0 | amdgpu version: 6.16.13 | hsmp version: N/A".
DEFAULTS: dict[str, tuple[Any, str]] = {
    "version.kernel": ("6.8.0-60-generic", "Ubuntu 24.04 GA kernel series 6.8 (uname -r)"),
    "version.amdgpu": ("6.16.13", "amdgpu DKMS of ROCm 7.2.0 (/sys/module/amdgpu/version; None = in-tree driver)"),
    "version.rocm": ("7.2.0", "/opt/rocm/.info/version of ROCm 7.2.0 (None = ROCm not installed)"),
    "version.amdsmi_lib": ("26.2.1", "amdsmi_get_lib_version() of ROCm 7.2.0 (`amd-smi version`)"),
    "version.amdsmi_wheel": ("7.2.0", "PyPI amdsmi wheel numbered like its ROCm release (ml-energy/amdsmi README)"),
    "version.amd_smi_tool": ("26.2.1+fc0010cf6a", "`amd-smi version` AMDSMI Tool of ROCm 7.2.0"),
    "version.vllm": ("0.33.0", "the vLLM release gpu-sharing's flags are generated for"),
    "version.python": (platform.python_version(), "the interpreter running the simulation"),
    "amdgpu_loaded": (True, "/sys/module/amdgpu exists when the driver is loaded"),
    "amd_smi_on_path": (True, "amd-smi ships in /opt/rocm/bin with amd-smi-lib"),
    "amd_smi_json_framing": ("gpu_data", "amd-smi >= 26 (ROCm 7.0) wraps static/metric JSON in gpu_data; "
                                         "older prints bare arrays (ROCm/rocm-systems PR #223)"),
    "vllm_rejects_flags": ([], "flags the installed vLLM does not know (none for 0.33.0)"),
    "device.market_name": (None, "amdsmi_get_gpu_asic_info market_name (None = the catalog's)"),
    "device.memory_caps": (None, "amdsmi_get_gpu_memory_partition_config partition_caps (None = the catalog's)"),
    "device.vram_per_partition_bytes": (None, "amdsmi_get_gpu_memory_total VRAM per partition (None = catalog)"),
    "device.cu_per_partition": (None, "amdsmi_get_gpu_asic_info num_compute_units per partition (None = catalog)"),
    "device.memory_mode_of_gpu": ({}, "per-GPU memory mode overrides: a hive whose GPUs disagree"),
    "devices_accessible": (True, "/dev/kfd and /dev/dri/renderD* open for the vLLM user (render/video groups)"),
    "read_only_paths": ([], "directories the daemon cannot write (a read-only mount, a sandbox); none on a healthy node"),
    "cu_mask_wrong_device": (False, "ROCm applies HSA_CU_MASK to the device the daemon meant"),
}
KNOB_NAMES = tuple(DEFAULTS)


def knob(state: dict[str, Any], name: str) -> Any:
    """The node's value for ``name``: its knob if set, else the real-node default."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown simulator knob {name!r}; known: {', '.join(KNOB_NAMES)}")
    knobs = state.get("knobs") or {}
    return knobs[name] if name in knobs else DEFAULTS[name][0]


def knob_source(state: dict[str, Any], name: str) -> str:
    """Where the simulated answer comes from: the knob someone set, or the real node the default copies."""
    if name in (state.get("knobs") or {}):
        return f"simulator knob {name} (set with `gpu-sharing simulator set-fault --knob`)"
    return f"simulator default {name}: {DEFAULTS[name][1]}"


def _major_minor(version: str | None) -> tuple[int, int] | None:
    try:
        parts = str(version).split(".")
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def import_amdsmi_outcome(state: dict[str, Any]) -> tuple[str, str]:
    """What ``import amdsmi`` does on this node: ("ok", ""), ("missing", msg) or ("skew", msg).

    Rules (PyPI amdsmi 7.0.2 amdsmi_wrapper.py): without libamd_smi.so the wrapper prints the OSError
    and "Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager",
    then raises KeyError('libamd_smi.so'); every C symbol is resolved at import, so a library older
    than the wheel raises AttributeError "<lib>: undefined symbol: <name>" (real-stack-findings:
    amdsmi_gpu_driver_reload, added in 7.0).
    """
    rocm = knob(state, "version.rocm")
    if rocm is None:
        return "missing", "KeyError: 'libamd_smi.so' (Unable to find libamd_smi.so library try installing amd-smi-lib)"
    wheel, lib = _major_minor(knob(state, "version.amdsmi_wheel")), _major_minor(rocm)
    if wheel and lib and wheel > lib:
        symbol = "amdsmi_gpu_driver_reload" if lib < (7, 0) <= wheel else "a function added after ROCm " + str(rocm)
        return "skew", f"AttributeError: /opt/rocm/lib/libamd_smi.so: undefined symbol: {symbol}"
    return "ok", ""


def masked_kernel_run(state: dict[str, Any], partitions: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """Run a tiny kernel as ROCm would under ``env``: which device it lands on and which CUs it uses.

    Rules: HIP device 0 is the first index of HIP_VISIBLE_DEVICES (post ROCR_VISIBLE_DEVICES); the
    HSA_CU_MASK GPU indices count devices after ROCR_VISIBLE_DEVICES filtering (rocm.docs.amd.com
    reference/environment-variables, "setting-cus"). The default knob models what the daemon's
    launch contract expects (mask index 0 = the instance's device); ``cu_mask_wrong_device`` models a
    runtime that numbers the mask over every GPU of the node, as ROCr does when only
    HIP_VISIBLE_DEVICES is set (real-stack-findings.md, "ROCm runtime"), so mask 0 lands on node device 0.
    """
    hip = [int(x) for x in (env.get("HIP_VISIBLE_DEVICES") or "0").split(",") if x.strip()]
    device = next(p for p in partitions if p["hip_index"] == hip[0])
    all_cus = frozenset(range(device["cu_count"]))
    mask = env.get("HSA_CU_MASK")
    if not mask:
        return {"hip_index": device["hip_index"], "cus": sorted(all_cus), "mask_target": None}
    wrong = bool(knob(state, "cu_mask_wrong_device"))
    visible = len(partitions) if wrong else len(hip)
    try:
        sets = parse_hsa_cu_mask(mask, visible, cu_count=device["cu_count"])
    except CuMaskError as e:
        return {"hip_index": device["hip_index"], "cus": sorted(all_cus), "mask_target": None, "error": e.message}
    # Right: mask index i is HIP device i, so index 0 is this device. Wrong: index i is node device i.
    cus = sets.get(device["hip_index"]) if wrong else sets.get(0)
    target = partitions[0]["hip_index"] if wrong else device["hip_index"]
    return {"hip_index": device["hip_index"], "cus": sorted(cus if cus is not None else all_cus), "mask_target": target}
