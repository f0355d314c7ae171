"""Permission checks: partition calls, device nodes for the vLLM user, writable state and cache dirs.

- privileges: partition changes need root (amdsmi NO_PERM otherwise; RSMI "root required"); inside
  the unit that means CAP_SYS_ADMIN, plus CAP_SYS_MODULE for the NPS driver reload (modprobe) when
  node.allow_driver_reload is on (systemd/gpu-sharing.service CapabilityBoundingSet).
- device-access: vLLM opens /dev/kfd and its /dev/dri/renderD* node (AMD: user in the render and
  video groups); checked for the daemon's user and every models[].limits.user.
- state-dir / cache-dirs: the unit runs with ProtectSystem=full (/usr, /boot, /efi, /etc read-only)
  and ProtectHome=read-only (/home, /root, /run/user read-only) (systemd.exec(5)); only
  StateDirectory=/var/lib/gpu-sharing and LogsDirectory=/var/log/gpu-sharing are made writable.
  vLLM downloads weights into the Hugging Face cache, so a cache under a home directory cannot be
  written by instances the unit starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpu_sharing.doctor.checks import Check, Family, Status, check
from gpu_sharing.doctor.context import DoctorContext

F = Family.PERMISSIONS
CAP_SYS_MODULE = 16
CAP_SYS_ADMIN = 21
SANDBOX_READ_ONLY = ("/usr", "/boot", "/efi", "/etc", "/home", "/root", "/run/user")
SANDBOX_WRITABLE = ("/var/lib/gpu-sharing", "/var/log/gpu-sharing")
DEFAULT_HF_CACHE = "/root/.cache/huggingface"
"""Where vLLM under the unit (root) caches weights unless HF_HOME / sizing.hf_cache_dir says otherwise."""


def sandbox_read_only(path: str) -> bool:
    p = os.path.normpath(path)
    if any(p == w or p.startswith(w + "/") for w in SANDBOX_WRITABLE):
        return False
    return any(p == r or p.startswith(r + "/") for r in SANDBOX_READ_ONLY)


def privileges(ctx: DoctorContext) -> Check:
    fact = ctx.probe.privileges()
    need = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}
    if ctx.config.node.allow_driver_reload:
        need[CAP_SYS_MODULE] = "CAP_SYS_MODULE"
    expected = "root, or " + " + ".join(need.values())
    euid, caps = fact.value["euid"], fact.value["caps"]
    missing = [name for bit, name in need.items() if not caps >> bit & 1]
    measured = f"euid {euid}, " + (f"lacks {', '.join(missing)}" if missing else "has " + ", ".join(need.values()))
    if euid != 0 and missing:
        return check("privileges", F, Status.FAIL, measured, expected,
                     fix="run the daemon (and this doctor) as root: the systemd unit does; partition changes "
                     "fail with AMDSMI_STATUS_NO_PERM otherwise", source=fact.source)
    return check("privileges", F, Status.PASS, measured, expected, source=fact.source)


def device_access(ctx: DoctorContext) -> Check:
    users = sorted({m.limits.user for m in ctx.config.models if m.limits.user}) or [None]
    expected = "/dev/kfd and every /dev/dri/renderD* readable and writable by " + \
        ", ".join(u or "the daemon's user" for u in users)
    denied, source = [], ""
    for user in users:
        fact = ctx.probe.device_access(user)
        source = fact.source
        if not fact.ok:
            return check("device-access", F, Status.FAIL, fact.error, expected, fix=fact.fix, source=fact.source)
        denied += [f"{user or 'daemon'}: {p}" for p in fact.value["denied"]]
    if denied:
        shown = "; ".join(denied[:3]) + (f" (+{len(denied) - 3} more)" if len(denied) > 3 else "")
        return check("device-access", F, Status.FAIL, f"denied {shown}", expected,
                     fix="add the user to the render and video groups (`usermod -aG render,video USER`) "
                     "and check the udev rules of /dev/kfd", source=source)
    return check("device-access", F, Status.PASS, "all device nodes accessible", expected, source=source)


def _dir_problem(ctx: DoctorContext, path: str, sandboxed: bool) -> tuple[str | None, str]:
    if sandboxed and sandbox_read_only(path):
        return f"{path} is read-only under the unit (ProtectSystem=full/ProtectHome=read-only)", "systemd sandbox rule"
    fact = ctx.probe.writable(path)
    if not fact.value["writable"]:
        return f"{path} is not writable ({fact.value['checked']})", fact.source
    return None, fact.source


def state_dir(ctx: DoctorContext) -> Check:
    path = str(ctx.state_dir)
    sandbox = ctx.probe.systemd_sandbox()
    expected = "writable by the daemon" + (" under the unit's sandbox" if sandbox.value else "")
    problem, source = _dir_problem(ctx, path, bool(sandbox.value))
    source = f"{source}; {sandbox.source}"
    if problem:
        return check("state-dir", F, Status.FAIL, problem, expected,
                     fix=f"use node.state_dir: {SANDBOX_WRITABLE[0]} (the unit's StateDirectory), or make {path} "
                     "writable (ReadWritePaths= in a unit drop-in)", source=source)
    return check("state-dir", F, Status.PASS, f"{path} writable", expected, source=source)


def _hf_cache(ctx: DoctorContext, sandboxed: bool) -> str:
    env = {**ctx.config.vllm.env}
    for m in ctx.config.models:
        env.update(m.env)
    if ctx.config.sizing.hf_cache_dir:
        return ctx.config.sizing.hf_cache_dir
    if env.get("HF_HUB_CACHE") or env.get("HF_HOME"):
        return env.get("HF_HUB_CACHE") or env["HF_HOME"]
    return DEFAULT_HF_CACHE if sandboxed else os.path.expanduser("~/.cache/huggingface")


def cache_dirs(ctx: DoctorContext) -> Check:
    sandbox = ctx.probe.systemd_sandbox()
    sandboxed = bool(sandbox.value)
    log_dir = ctx.config.vllm.log_dir or str(Path(ctx.state_dir) / "logs")
    downloads = [m.name for m in ctx.config.models if m.enabled and not Path(m.source).is_dir()]
    dirs = {"vllm.log_dir": log_dir}
    if downloads or ctx.config.vllm.stage_weights:
        dirs["Hugging Face cache"] = _hf_cache(ctx, sandboxed)
    expected = "log dir and (for models vLLM downloads) the Hugging Face cache writable" + \
        (" under the unit's sandbox" if sandboxed else "")
    problems, sources = [], {sandbox.source}
    for what, path in dirs.items():
        problem, source = _dir_problem(ctx, path, sandboxed)
        sources.add(source)
        if problem:
            problems.append(f"{what}: {problem}")
    measured = "; ".join(f"{k} {v}" for k, v in dirs.items())
    if problems:
        return check("cache-dirs", F, Status.FAIL, "; ".join(problems), expected,
                     fix="set sizing.hf_cache_dir / vllm.env HF_HOME and vllm.log_dir under /var/lib/gpu-sharing "
                     "(or add ReadWritePaths= in a unit drop-in)", source="; ".join(sorted(sources)))
    return check("cache-dirs", F, Status.PASS, measured + " writable", expected, source="; ".join(sorted(sources)))


CHECKS = (privileges, device_access, state_dir, cache_dirs)
