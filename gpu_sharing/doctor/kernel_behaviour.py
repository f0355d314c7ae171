"""Kernel behaviour that decides the drain strategy: is a compute-mode change refused while a process
elsewhere on the node holds /dev/kfd?

Source: amd-gfx "drm/amdkfd: allow compute partition mode switch with cgroup exclusions" (J. Kim,
29 May 2025; commit 96f75f9594466f92b10873cc3a49267cfe15ee49, merged for Linux 6.17 in
drm-next-2025-07-30). Before it, any KFD process on the node bars every compute-mode switch
("strict"); after it, only processes with a process-device entry on that GPU do, and a process gets
entries only for the GPUs its device cgroup allows ("cgroup_exclusion"). HIP_VISIBLE_DEVICES does not
limit the entries, so with ``launcher: direct`` every vLLM blocks every GPU either way; only
``launcher: systemd-run`` (DevicePolicy=closed + DeviceAllow) on a patched kernel lets one GPU be
repartitioned while the others serve (real-stack-findings.md).

Detection: an in-tree amdgpu follows the kernel version (>= 6.17: cgroup_exclusion). A DKMS amdgpu
(/sys/module/amdgpu/version) carries its own backports, so its version does not tell: assume strict,
and ``--deep`` measures it: a probe process confined to one GPU holds /dev/kfd while the doctor
changes the compute mode of another idle GPU (and changes it back).
"""

from __future__ import annotations

from gpu_sharing.config.schema import LauncherKind
from gpu_sharing.doctor.checks import Check, Family, Status, check, version_tuple
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode
from gpu_sharing.hardware.catalog import get_spec

F = Family.KERNEL
PATCHED_KERNEL = (6, 17)
STRICT, CGROUP = "strict", "cgroup_exclusion"
PATCH = "drm/amdkfd commit 96f75f95 (Linux 6.17)"


def mode_from_versions(kernel_release: str | None, dkms_version: str | None) -> tuple[str | None, str]:
    """(mode or None when the versions do not tell, why)."""
    if dkms_version:
        return None, f"amdgpu DKMS {dkms_version}: its version does not tell whether it carries {PATCH}"
    v = version_tuple(kernel_release, 2)
    if v is None:
        return None, f"kernel release {kernel_release!r} unreadable"
    if v >= PATCHED_KERNEL:
        return CGROUP, f"in-tree amdgpu of kernel {kernel_release} (>= 6.17 has {PATCH})"
    return STRICT, f"in-tree amdgpu of kernel {kernel_release} (< 6.17, before {PATCH})"


def _probe(ctx: DoctorContext) -> tuple[str | None, str]:
    """Measure the behaviour: hold /dev/kfd on GPU A, change the compute mode of idle GPU B, restore it."""
    backend, inv = ctx.backend(), ctx.inventory(fresh=True)
    if backend is None or inv is None:
        return None, f"cannot read the GPUs: {ctx.inventory_error}"
    idle = [g for g in inv.gpus if not g.processes]
    if len(inv.gpus) < 2 or not idle:
        return None, "needs two GPUs, one of them idle"
    target = idle[-1]
    holder = next(g for g in inv.gpus if g.index != target.index)
    spec = get_spec(target.model)
    other = next((c for c in spec.compute_modes() if c != target.compute_mode
                  and spec.is_valid(c, target.memory_mode)), None)
    if other is None:
        return None, f"GPU {target.index} has no other compute mode with {target.memory_mode.value}"
    try:
        with ctx.probe.hold_kfd(holder.partitions[0].render_node, holder.index) as pid:
            try:
                backend.set_compute_mode(target.index, other)
            except BackendError as e:
                if e.code == BackendErrorCode.BUSY:
                    return STRICT, (f"probe pid {pid} held /dev/kfd on GPU {holder.index} only; setting GPU "
                                    f"{target.index} to {other.value} was refused (BUSY)")
                return None, f"the probe's mode change failed: {e}"
    except (RuntimeError, OSError) as e:  # no systemd-run, no scope, /dev/kfd refused
        return None, f"the KFD probe process could not start: {e}"
    try:
        backend.set_compute_mode(target.index, target.compute_mode)
    except BackendError as e:
        return CGROUP, f"changed GPU {target.index} to {other.value} but could not restore {target.compute_mode.value}: {e}"
    return CGROUP, (f"probe pid {pid} held /dev/kfd on GPU {holder.index} only; GPU {target.index} switched to "
                    f"{other.value} and back")


def kfd_mode_switch(ctx: DoctorContext) -> Check:
    kernel = ctx.cached("kernel", ctx.probe.kernel_release)
    driver = ctx.cached("amdgpu", ctx.probe.amdgpu_driver)
    source = f"{kernel.source}; {driver.source}; rule: {PATCH}"
    if not (driver.value or {}).get("loaded"):
        return check("kfd-mode-switch", F, Status.SKIP, "amdgpu is not loaded", "the KFD of a loaded amdgpu",
                     source=source)
    rule, why = mode_from_versions(kernel.value, (driver.value or {}).get("version"))
    measured_mode, measured_why = None, ""
    if ctx.deep:
        measured_mode, measured_why = _probe(ctx)
        source += "; --deep probe"
    launcher = ctx.config.node.launcher
    expected = ("cgroup_exclusion (launcher systemd-run repartitions one GPU while the others serve)"
                if launcher == LauncherKind.SYSTEMD_RUN else
                "known (launcher direct: every vLLM holds a KFD context on every GPU, so a compute-mode change "
                "waits for every instance to stop)")
    if measured_mode and rule and measured_mode != rule:
        return check("kfd-mode-switch", F, Status.FAIL, f"{measured_mode}: {measured_why}; versions said {rule} "
                     f"({why})", expected, fix=f"the driver does not behave as its version says: report it, and "
                     f"plan for {measured_mode}", source=source)
    mode = measured_mode or rule
    ctx.facts["kfd_mode_switch"] = mode or STRICT
    ctx.facts["drain"] = "gpu" if mode == CGROUP and launcher == LauncherKind.SYSTEMD_RUN else "node"
    ctx.facts["measured"] = measured_mode is not None
    detail = measured_why or why
    if launcher == LauncherKind.SYSTEMD_RUN and mode != CGROUP:
        status = Status.FAIL if mode == STRICT else Status.WARN
        return check("kfd-mode-switch", F, status, f"{mode or 'unknown (assumed strict)'}: {detail}", expected,
                     fix="compute-mode changes will be refused while any instance runs: use a kernel >= 6.17 or an "
                     f"amdgpu with {PATCH}" + ("" if mode else "; run `gpu-sharing doctor --deep` to measure it"),
                     source=source)
    return check("kfd-mode-switch", F, Status.PASS,
                 f"{mode or 'unknown (assumed strict)'}: {detail}; drain: {ctx.facts['drain']}", expected,
                 source=source)


CHECKS = (kfd_mode_switch,)
