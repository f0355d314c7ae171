"""Version checks: kernel, amdgpu driver, ROCm, the amdsmi wheel vs libamd_smi.so, the amd-smi CLI,
vLLM (and which generated flags it would reject), Python.

Expectations and where they come from:
- ROCm >= 6.4: AMD's partitioning guide lists ROCm 6.4 as the first release validated for MI300X
  CPX+NPS4 (amdgpu-docs gpu-partitioning, prerequisites).
- The amdsmi wheel resolves every C symbol of libamd_smi.so at import, so a wheel newer than the
  ROCm it loads raises AttributeError (real-stack-findings); the wheel is numbered like the ROCm
  release it was cut from (ml-energy/amdsmi README), so major.minor must match ROCm's.
- amd-smi >= 26 (ROCm 7.0) wraps ``static``/``metric`` JSON in ``gpu_data``; the amd-smi-cli
  backend reads that envelope (amd-smi-shapes.md, ROCm/rocm-systems PR #223).
- vLLM 0.33: every generated flag is checked against its flag metadata (launch_spec).
- Python >= 3.11: pyproject requires-python.
"""

from __future__ import annotations

from gpu_sharing.config.schema import BackendKind
from gpu_sharing.doctor.checks import Check, Family, Status, check, from_missing, version_tuple
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.doctor.probe import INSTALL_AMDSMI, INSTALL_ROCM
from gpu_sharing.doctor.vllm_flags import generated_flags, metadata_source

F = Family.VERSIONS
MIN_ROCM = (6, 4)
VLLM_TARGET = (0, 33)
MIN_PYTHON = (3, 11)


def kernel(ctx: DoctorContext) -> Check:
    fact = ctx.cached("kernel", ctx.probe.kernel_release)
    if not fact.ok or version_tuple(fact.value, 2) is None:
        return check("kernel", F, Status.FAIL, fact.value or fact.error, "a Linux release string (uname -r)",
                     fix="run the doctor on the GPU node itself", source=fact.source)
    return check("kernel", F, Status.PASS, fact.value, "any kernel ROCm supports; see kfd-mode-switch",
                 source=fact.source)


def amdgpu_driver(ctx: DoctorContext) -> Check:
    fact = ctx.cached("amdgpu", ctx.probe.amdgpu_driver)
    info = fact.value or {}
    if not info.get("loaded"):
        return check("amdgpu-driver", F, Status.FAIL, "amdgpu not loaded", "the amdgpu module loaded",
                     fix="`modprobe amdgpu` (check `dmesg | grep amdgpu`); if absent, " + INSTALL_ROCM,
                     source=fact.source)
    measured = f"DKMS {info['version']}" if info.get("version") else "in-tree (the kernel's own amdgpu)"
    return check("amdgpu-driver", F, Status.PASS, measured, "amdgpu loaded", source=fact.source)


def rocm(ctx: DoctorContext) -> Check:
    fact = ctx.cached("rocm", ctx.probe.rocm_version)
    expected = f"ROCm >= {MIN_ROCM[0]}.{MIN_ROCM[1]}"
    if not fact.ok:
        return from_missing("rocm", F, fact, expected)
    v = version_tuple(fact.value, 2)
    if v is None or v < MIN_ROCM:
        return check("rocm", F, Status.FAIL, fact.value, expected, fix=INSTALL_ROCM, source=fact.source)
    return check("rocm", F, Status.PASS, fact.value, expected, source=fact.source)


def amdsmi_library(ctx: DoctorContext) -> Check:
    fact = ctx.cached("amdsmi", ctx.probe.amdsmi_library)
    expected = "`import amdsmi` works and the wheel's major.minor equals ROCm's"
    if not fact.ok:
        return from_missing("amdsmi-library", F, fact, expected)
    info = fact.value
    outcome, wheel = info.get("outcome"), info.get("wheel")
    if outcome == "no-wheel":
        return check("amdsmi-library", F, Status.FAIL, "the amdsmi wheel is not installed", expected,
                     fix="pip install 'amdsmi==<your ROCm version>' in gpu-sharing's environment", source=fact.source)
    if outcome == "missing":
        return check("amdsmi-library", F, Status.FAIL, f"wheel {wheel}: {info.get('detail')}", expected,
                     fix=INSTALL_AMDSMI, source=fact.source)
    rocm_fact = ctx.cached("rocm", ctx.probe.rocm_version)
    rocm_v = info.get("rocm") or (rocm_fact.value if rocm_fact.ok else None)
    if outcome == "skew":
        return check("amdsmi-library", F, Status.FAIL, f"wheel {wheel} over ROCm {rocm_v}: {info.get('detail')}",
                     expected, fix=f"pip install 'amdsmi=={rocm_v}' (the wheel must not be newer than ROCm's "
                     "libamd_smi.so)", source=fact.source)
    measured = f"wheel {wheel}, libamd_smi {info.get('lib')}, ROCm {rocm_v}"
    if version_tuple(wheel, 2) != version_tuple(rocm_v, 2):
        return check("amdsmi-library", F, Status.WARN, measured, expected,
                     fix=f"pip install 'amdsmi=={rocm_v}' so the Python API matches the library", source=fact.source)
    return check("amdsmi-library", F, Status.PASS, measured, expected, source=fact.source)


def amd_smi_cli(ctx: DoctorContext) -> Check:
    fact = ctx.probe.amd_smi_cli()
    expected = "amd-smi >= 26 on PATH printing {\"gpu_data\": [...]} JSON"
    if not fact.ok:
        lib = ctx.cached("amdsmi", ctx.probe.amdsmi_library).value or {}
        needed = ctx.config.node.backend == BackendKind.AMD_SMI_CLI or lib.get("outcome") != "ok"
        return from_missing("amd-smi-cli", F, fact, expected, Status.FAIL if needed else Status.WARN)
    v = fact.value["version"]
    measured = (f"{fact.value['path']}: tool {v.get('version')}, library {v.get('amdsmi_library_version')}, "
                f"ROCm {v.get('rocm_version')}, amdgpu {v.get('amdgpu_version')}; JSON framing {fact.value['framing']}")
    if fact.value["framing"] != "gpu_data":
        return check("amd-smi-cli", F, Status.FAIL, measured, expected,
                     fix="upgrade to ROCm >= 7.0 (amd-smi 26), or set node.backend: amdsmi", source=fact.source)
    return check("amd-smi-cli", F, Status.PASS, measured, expected, source=fact.source)


def vllm(ctx: DoctorContext) -> Check:
    command = ctx.config.vllm.command
    fact = ctx.probe.vllm(command)
    expected = "vLLM 0.33.x; every generated flag known to it"
    if not fact.ok:
        return from_missing("vllm", F, fact, expected)
    version, installed = fact.value["version"], fact.value.get("flags")
    generated = generated_flags(ctx.config)
    errors = [f"{m}: {f[0][7:]}" for m, f in generated.items() if f and f[0].startswith("error: ")]
    wanted = {flag for flags in generated.values() if not flags or not flags[0].startswith("error: ") for flag in flags}
    source = f"{fact.source}; generated flags from runtime.launch_spec checked against {metadata_source()}"
    if errors:
        return check("vllm", F, Status.FAIL, f"vLLM {version}; " + "; ".join(errors), expected,
                     fix="remove or rename the vllm_args keys vLLM 0.33 does not know", source=source)
    if installed is None:
        status = Status.PASS if version_tuple(version, 2) == VLLM_TARGET else Status.WARN
        return check("vllm", F, status, f"vLLM {version} (its flag list could not be read)", expected,
                     fix="install vllm==0.33.0, the version gpu-sharing generates flags for", source=source)
    rejected = sorted(wanted - set(installed))
    if rejected:
        return check("vllm", F, Status.FAIL, f"vLLM {version} would reject {', '.join(rejected)}", expected,
                     fix="install vllm==0.33.0 (pip install vllm==0.33.0), or drop those flags from vllm_args",
                     source=source)
    if version_tuple(version, 2) != VLLM_TARGET:
        return check("vllm", F, Status.WARN, f"vLLM {version}; accepts all {len(wanted)} generated flags", expected,
                     fix="gpu-sharing's sizing constants and log parsing are written for vLLM 0.33: install "
                     "vllm==0.33.0", source=source)
    return check("vllm", F, Status.PASS, f"vLLM {version}; accepts all {len(wanted)} generated flags", expected,
                 source=source)


def python(ctx: DoctorContext) -> Check:
    fact = ctx.probe.python_version()
    expected = f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
    v = version_tuple(fact.value, 2)
    if v is None or v < MIN_PYTHON:
        return check("python", F, Status.FAIL, fact.value, expected,
                     fix="install gpu-sharing in a Python 3.11+ virtual environment", source=fact.source)
    return check("python", F, Status.PASS, fact.value, expected, source=fact.source)


CHECKS = (kernel, amdgpu_driver, rocm, amdsmi_library, amd_smi_cli, vllm, python)
__all__ = ["CHECKS", "INSTALL_ROCM"]
