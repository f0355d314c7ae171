"""Hardware checks: what the devices report against the catalog the planner plans with.

- gpu-model: every GPU's market name is a catalog model (and the config's node.gpu_model).
- partition-geometry: XCCs, CUs and VRAM of every logical partition in its current mode equal the
  catalog's (VRAM within 2 %: drivers reserve some memory, e.g. MI300X reports ~191.98 of 192 GiB).
- memory-caps: the memory-partition caps each GPU reports (amdsmi partition_caps) vs the catalog's
  valid pairs. AMD: supported combinations "vary by GPU model and firmware" (amdsmi
  docs/conceptual/partition.md), so a static table alone is not trusted.
- hive: GPUs of one XGMI hive share the memory mode (a memory-mode change applies to the whole hive).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Callable, Protocol

from gpu_sharing.doctor.checks import Check, Family, Status, check
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.hardware.catalog import CATALOG, get_spec
from gpu_sharing.hardware.inventory import Inventory

F = Family.HARDWARE
VRAM_TOLERANCE = 0.02
GIB = 1024**3


class Verdict(Protocol):
    def __call__(self, status: Status, measured: str, *, fix: str = "") -> Check: ...


def reads_gpus(name: str, expected: Callable[[DoctorContext], str] | str):
    """A check over the inventory: FAIL naming the backend's error when the GPUs cannot be read; otherwise the
    check gets the inventory and a ``verdict(status, measured, fix=...)`` that fills in its name, family,
    expectation and the backend as the source."""
    def wrap(body: Callable[[DoctorContext, Inventory, Verdict], Check]) -> Callable[[DoctorContext], Check]:
        @functools.wraps(body)
        def run(ctx: DoctorContext) -> Check:
            wanted = expected(ctx) if callable(expected) else expected
            inv = ctx.inventory()
            if inv is None:
                return check(name, F, Status.FAIL, f"cannot read the GPUs: {ctx.inventory_error}", wanted,
                             fix="fix the versions checks above (ROCm, amdgpu, amdsmi/amd-smi), then re-run",
                             source="backend")

            def verdict(status: Status, measured: str, *, fix: str = "") -> Check:
                return check(name, F, status, measured, wanted, fix=fix, source=ctx.backend_source)
            return body(ctx, inv, verdict)
        return run
    return wrap


def _expected_models(ctx: DoctorContext) -> str:
    return f"one of {', '.join(CATALOG)}" + (f", as node.gpu_model says ({ctx.config.node.gpu_model})"
                                             if ctx.config.node.gpu_model else "")


@reads_gpus("gpu-model", _expected_models)
def gpu_model(ctx: DoctorContext, inv: Inventory, verdict: Verdict) -> Check:
    if not inv.gpus:
        return verdict(Status.FAIL, "no GPU found", fix="check `amd-smi list` and dmesg")
    models = sorted({g.model for g in inv.gpus})
    measured = f"{len(inv.gpus)} x {', '.join(models)}"
    unknown = [m for m in models if m not in CATALOG]
    if unknown:
        return verdict(Status.FAIL, measured, fix=f"gpu-sharing has no partitioning facts for {', '.join(unknown)}; "
                       "add them to gpu_sharing/hardware/catalog.py with their sources")
    wanted = ctx.config.node.gpu_model
    if wanted and models != [wanted]:
        return verdict(Status.FAIL, measured, fix=f"set node.gpu_model to {models[0]} (or remove it)")
    return verdict(Status.PASS, measured)


@reads_gpus("partition-geometry", "XCC, CU and VRAM per partition as the catalog says for the current modes")
def partition_geometry(ctx: DoctorContext, inv: Inventory, verdict: Verdict) -> Check:
    problems, shapes = [], set()
    for g in inv.gpus:
        if g.model not in CATALOG:
            continue
        spec = get_spec(g.model)
        want_cu, want_xcc = spec.cus_per_partition(g.compute_mode), spec.xccs_per_partition(g.compute_mode)
        want_vram = spec.vram_per_partition_bytes(g.compute_mode)
        if len(g.partitions) != spec.partitions(g.compute_mode):
            problems.append(f"GPU {g.index} {g.compute_mode.value}: {len(g.partitions)} partitions, catalog "
                            f"{spec.partitions(g.compute_mode)}")
        for p in g.partitions:
            shapes.add(f"{g.compute_mode.value}+{g.memory_mode.value}: {p.xcc_count} XCC/{p.cu_count} CU/"
                       f"{p.vram_total_bytes / GIB:.1f} GiB")
            if p.cu_count != want_cu or p.xcc_count != want_xcc:
                problems.append(f"partition {p.id}: {p.xcc_count} XCC/{p.cu_count} CU, catalog {want_xcc}/{want_cu}")
            if abs(p.vram_total_bytes - want_vram) > VRAM_TOLERANCE * want_vram:
                problems.append(f"partition {p.id}: {p.vram_total_bytes / GIB:.2f} GiB VRAM, catalog "
                                f"{want_vram / GIB:.2f} GiB")
    if problems:
        shown = "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
        return verdict(Status.FAIL, shown, fix="correct gpu_sharing/hardware/catalog.py for this model/firmware (cite "
                       "the source), or check the memory-allocation mode (`amd-smi static -p`)")
    return verdict(Status.PASS, "; ".join(sorted(shapes)))


@reads_gpus("memory-caps", "each GPU's memory-partition caps equal the catalog's memory modes for its model")
def memory_caps(ctx: DoctorContext, inv: Inventory, verdict: Verdict) -> Check:
    backend = ctx.backend()
    if backend is not None and backend.name == "amd-smi-cli":
        return verdict(Status.WARN, "not read: the amd-smi-cli backend copies the catalog's modes",
                       fix="use the amdsmi backend (fix amdsmi-library), or compare `amd-smi partition -m` "
                       "memory_partition_caps with the catalog by hand")
    missing, extra, measured = [], [], set()
    for g in inv.gpus:
        if g.model not in CATALOG:
            continue
        catalog = {m.value for m in get_spec(g.model).memory_modes()}
        caps = {m.value for m in g.memory_caps}
        measured.add(f"{g.model}: {','.join(sorted(caps)) or 'none reported'}")
        if not caps:
            continue
        if catalog - caps:
            missing.append(f"GPU {g.index} lacks {','.join(sorted(catalog - caps))}")
        if caps - catalog:
            extra.append(f"GPU {g.index} also offers {','.join(sorted(caps - catalog))}")
    text = "; ".join(sorted(measured))
    if missing:
        return verdict(Status.FAIL, text + " (" + "; ".join(missing) + ")",
                       fix="the planner could pick a pair this firmware refuses: pin gpus[].memory_partition to a "
                       "reported mode, or update the catalog's valid pairs for this firmware")
    if extra:
        return verdict(Status.WARN, text + " (" + "; ".join(extra) + ")",
                       fix="the catalog is more conservative than this firmware; add the modes with a source if they "
                       "are wanted")
    if not any(g.memory_caps for g in inv.gpus):
        return verdict(Status.WARN, text,
                       fix="the device reported no caps (needs root on ROCm >= 6.4.1): run the doctor as root")
    return verdict(Status.PASS, text)


@reads_gpus("hive", "GPUs of one XGMI hive share one memory mode")
def hive(ctx: DoctorContext, inv: Inventory, verdict: Verdict) -> Check:
    hives: dict[int, list] = defaultdict(list)
    for g in inv.gpus:
        hives[g.hive_id].append(g)
    measured = "; ".join(f"hive {hid:#x}: GPUs {','.join(str(g.index) for g in gs)} "
                         f"({'/'.join(sorted({g.memory_mode.value for g in gs}))})" for hid, gs in sorted(hives.items()))
    mixed = [hid for hid, gs in hives.items() if hid and len({g.memory_mode for g in gs}) > 1]
    if mixed:
        return verdict(Status.FAIL, measured,
                       fix="a memory-mode change did not reach every GPU of the hive: stop GPU work, re-set the mode "
                       "(`amd-smi set -M NPSx`) and reload amdgpu (`modprobe -r amdgpu && modprobe amdgpu`)")
    return verdict(Status.PASS, measured)


CHECKS = (gpu_model, partition_geometry, memory_caps, hive)
