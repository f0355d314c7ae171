"""An instance is its process group (and, under systemd-run, its unit's cgroup), not one pid.

Why: vLLM V1 allocates GPU memory in its EngineCore process and, for tensor parallelism > 1, in one
worker process per rank; the ``vllm serve`` pid we spawn is the API server and holds none (vLLM docs,
design/arch_overview.md "V1 process architecture"; shared reference real-stack-findings.md). Budgets,
foreign-process detection, measured sizes and the wait for VRAM release must all count every process
of the instance. The spawner starts each instance in its own session (``start_new_session``), so its
process group is the instance; vLLM's children inherit it. Under ``launcher: systemd-run`` the vLLM
processes live in the transient unit's cgroup instead (``KillMode=control-group``), so that cgroup's
``cgroup.procs`` is read too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

CGROUP_ROOT = "/sys/fs/cgroup"
SYSTEM_SLICE = "system.slice"


def pids_by_group(proc_dir: str = "/proc") -> dict[int, list[int]]:
    """process group id -> live pids, from one scan of /proc (zombies excluded)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir(proc_dir):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_dir}/{entry}/stat", "rb") as f:
                tail = f.read().decode("utf-8", "replace").rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(tail) > 3 and tail[0] not in ("Z", "X"):
            out.setdefault(int(tail[3]), []).append(int(entry))
    return out


def unit_pids(unit_name: str, cgroup_root: str = CGROUP_ROOT) -> list[int]:
    """Pids in a transient system unit's cgroup (cgroup v2); [] when there is no such unit."""
    try:
        with open(os.path.join(cgroup_root, SYSTEM_SLICE, unit_name, "cgroup.procs"), encoding="ascii") as f:
            return [int(line) for line in f if line.strip().isdigit()]
    except OSError:
        return []


def instance_pids(pid: int, pgid: int | None, *, groups: Mapping[int, Iterable[int]] | None = None,
                  unit_name: str | None = None) -> frozenset[int]:
    """Every pid of one instance: the spawned pid, its process group, and its systemd unit's cgroup."""
    pids = {pid}
    if pgid is not None:
        pids.update((groups if groups is not None else pids_by_group()).get(pgid, ()))
    if unit_name is not None:
        pids.update(unit_pids(unit_name))
    return frozenset(pids)
