"""Partition-mode changes on the simulated node, with the kernel's rules (docs/hardware-facts.md).

- compute-mode change: root only, SETTING_UNAVAILABLE for a pair the GPU model does not offer,
  refused with BUSY per the node's ``kfd_mode_switch`` (see ``kfd_blockers``): ``strict`` (default,
  kernels before the May-2025 KFD change) any GPU process on the node blocks every GPU;
  ``cgroup_exclusion`` (with the change) a process blocks a GPU unless its device cgroup excludes it;
- memory-mode change: root only, pending until a driver reload, applies to every GPU
  of the XGMI hive, refused with BUSY while any GPU process exists on the hive;
- a driver reload takes ``reload_time_s`` and applies pending memory modes; a GPU whose
  memory mode changed comes up in the kernel's default (auto) compute mode for the new NPS
  mode (NPS1 -> SPX, NPS2 -> DPX, NPS4 -> QPX, NPS = XCC count -> CPX), whatever it was before;
- every mode change bumps ``generation`` (handles from before are stale).

``ModeChanges`` is the part of ``SimNode`` (node.py) that changes modes; it uses the node's locked state
edits (``_edit``, ``_reap``, ``state``), its views (``partitions``) and its injected faults (``take_fault``).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from simulator.node_store import SimError, gpu_entry

# When the KFD refuses a compute-partition change (BUSY). "strict": any process that opened /dev/kfd
# anywhere on the node blocks every compute-mode change ("The KFD currently bars a compute partition mode
# switch while a KFD process exists"). "cgroup_exclusion": only processes whose device cgroup includes
# that GPU block it (kgd2kfd_check_and_lock_kfd returns -EBUSY only if a process has a pdd on the device;
# kfd_init_apertures creates pdds for the GPUs the device cgroup allows). Source: amd-gfx patch
# "drm/amdkfd: allow compute partition mode switch with cgroup exclusions" (J. Kim, 29 May 2025),
# commit 96f75f9594466f92b10873cc3a49267cfe15ee49, merged for Linux 6.17 (drm-next-2025-07-30).
KFD_MODE_SWITCH = ("strict", "cgroup_exclusion")
"""How the kernel's KFD decides that a compute-partition switch is BUSY (``kfd_blockers``)."""


def _auto_compute(spec, memory: M) -> C:
    """Kernel auto rule: NPS count -> compute mode (aqua_vanjaram.c)."""
    n = memory.count
    if n == 1:
        return C.SPX
    if n == spec.xcd_count:
        return C.CPX
    for mode in spec.compute_modes():
        if spec.partitions(mode) == n and spec.is_valid(mode, memory):
            return mode
    return next(c for c in spec.compute_modes() if spec.is_valid(c, memory))


class ModeChanges:
    """Compute- and memory-mode changes and the driver reload of ``SimNode``, as the kernel rules them."""

    def set_kfd_mode_switch(self, mode: str) -> None:
        if mode not in KFD_MODE_SWITCH:
            raise ValueError(f"kfd_mode_switch must be one of {KFD_MODE_SWITCH}, not {mode!r}")
        with self._edit() as state:
            state["kfd_mode_switch"] = mode

    def _fault(self, op: str) -> None:
        code = self.take_fault(op)
        if code and code != "GARBAGE":
            raise SimError(code, f"injected fault on {op}")

    @contextmanager
    def _mode_change(self, op: str, gpu: int) -> Iterator[tuple[dict[str, Any], dict[str, Any], Any]]:
        """One locked change of ``gpu``'s modes: the injected fault for ``op`` first, dead processes reaped, root
        only (NO_PERM). Yields the state, the GPU's entry and its model's spec; written back unless it raises."""
        self._fault(op)
        with self._edit() as state:
            self._reap(state)
            g = gpu_entry(state, gpu)
            if not state["root"]:
                raise SimError("NO_PERM", "Permission Denied")
            yield state, g, get_spec(state["gpu_model"])

    def set_compute_mode(self, gpu: int, mode: str) -> bool:
        """Returns False when already at ``mode`` (no write), True when changed."""
        with self._mode_change("set_compute", gpu) as (state, g, spec):
            c = C(mode)
            m = M(g["memory_mode"])
            if not spec.is_valid(c, m):
                raise SimError("SETTING_UNAVAILABLE", f"{c.value} is not available with {m.value} on {spec.name}; "
                               f"allowed pairs: {spec.describe_valid_pairs()}")
            if g["compute_mode"] == c.value:
                return False
            procs = kfd_blockers(self, state, gpu)
            if procs:
                raise SimError("BUSY", _busy_detail(procs))
            g["compute_mode"] = c.value
            state["generation"] += 1
            return True

    def set_memory_mode(self, gpu: int, mode: str) -> bool:
        with self._mode_change("set_memory", gpu) as (state, g, spec):
            m = M(mode)
            if spec.memory_mode_fixed:
                raise SimError("NOT_SUPPORTED", f"memory partition is fixed at boot on {spec.name}")
            if m not in spec.memory_modes():
                raise SimError("INVAL", f"{m.value} is not offered by {spec.name}; valid memory partition modes: "
                               f"{','.join(x.value for x in spec.memory_modes())}")
            hive = [x for x in state["gpus"] if x["hive_id"] == g["hive_id"]]
            if all(x["memory_mode"] == m.value and not x["pending_memory_mode"] for x in hive):
                return False
            busy = [p for x in hive for p in _procs_on_gpu(self, state, x["index"])]
            if busy:
                raise SimError("BUSY", _busy_detail(busy))
            for x in hive:
                x["pending_memory_mode"] = None if x["memory_mode"] == m.value else m.value
            return True

    def reload_driver(self, progress: Callable[[str, float], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> None:
        """Simulated ``modprobe -r amdgpu && modprobe amdgpu``: all GPU work must be stopped."""
        self._fault("reload")
        st = self.state()
        if not st["root"]:
            raise SimError("NO_PERM", "Permission Denied")
        if st["processes"]:
            raise SimError("BUSY", "amdgpu is in use: " + _busy_detail(st["processes"]))
        total = float(st["reload_time_s"])
        steps = max(1, min(20, math.ceil(total / 0.25)))
        for i in range(steps):
            if progress:
                progress("reloading amdgpu", i / steps)
            sleep(total / steps)
        with self._edit() as state:
            spec = get_spec(state["gpu_model"])
            for g in state["gpus"]:
                pending = g.pop("pending_memory_mode", None)
                g["pending_memory_mode"] = None
                if pending:
                    # The NPS change re-initialises the XCP manager with the default partition mode
                    # (module parameter amdgpu.user_partt_mode, default -2 = auto: kernel amdgpu_drv.c;
                    # auto rule __aqua_vanjaram_get_auto_mode in aqua_vanjaram.c), so the compute mode
                    # chosen before is lost even when it is valid with the new NPS mode
                    # (docs/hardware-facts.md: "re-set compute mode afterwards"). Unverified on hardware.
                    g["memory_mode"] = pending
                    g["compute_mode"] = _auto_compute(spec, M(pending)).value
            state["generation"] += 1
        if progress:
            progress("amdgpu reloaded", 1.0)


def _procs_on_gpu(node: Any, state: dict[str, Any], gpu: int) -> list[dict[str, Any]]:
    return [dict(p, partition=f"{part['gpu']}.{part['index']}") for part in node.partitions(state)
            if part["gpu"] == gpu for p in part["processes"]]


def kfd_blockers(node: Any, state: dict[str, Any], gpu: int) -> list[dict[str, Any]]:
    """Processes whose KFD context makes a compute-partition switch of ``gpu`` BUSY.

    ``kfd_init_apertures()`` (kfd_flat_memory.c) runs at open("/dev/kfd") and creates a process-device
    entry (pdd) on every GPU the process's device cgroup allows; HIP_VISIBLE_DEVICES does not limit it
    (shared reference real-stack-findings.md, "KFD"). Every process on the simulated node is a KFD process.
    - ``strict`` (before amd-gfx "drm/amdkfd: allow compute partition mode switch with cgroup exclusions",
      J. Kim, 29 May 2025: "The KFD currently bars a compute partition mode switch while a KFD process
      exists"): any process anywhere on the node blocks every GPU.
    - ``cgroup_exclusion`` (with that change: ``kgd2kfd_check_and_lock_kfd(kfd)`` is -EBUSY only if a KFD
      process has a pdd on that device): a process blocks ``gpu`` unless its device cgroup excludes every
      partition of it.
    """
    mode = state.get("kfd_mode_switch", "strict")
    parts = node.partitions(state)
    where = {p["hip_index"]: f"{p['gpu']}.{p['index']}" for p in parts}
    mine = {p["hip_index"] for p in parts if p["gpu"] == gpu}
    out = []
    for p in state["processes"]:
        if "kfd_gpus" in p:  # a process that only opened /dev/kfd (open_kfd: its cgroup's GPUs, None = all)
            blocks = mode == "strict" or p["kfd_gpus"] is None or gpu in p["kfd_gpus"]
        else:
            allowed = p.get("device_cgroup")
            blocks = mode == "strict" or allowed is None or bool(mine & set(allowed))
        if blocks:
            out.append(dict(p, partition=where.get(p["hip_index"], f"hip {p['hip_index']}")))
    return out


def _busy_detail(procs: list[dict[str, Any]]) -> str:
    where = {p.get("partition", f"hip {p['hip_index']}") for p in procs}
    names = ", ".join(f"pid {p['pid']} {p['name']}" for p in procs[:3])
    return f"{len(procs)} process{'es' if len(procs) != 1 else ''} on partition {', '.join(sorted(where))} ({names})"
