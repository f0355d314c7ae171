"""Start-up recovery of one state dir: the state file read safely, the journal, the OS markers -> ``adoption.recover``.

Why a module of its own: the Reconciler calls it once (``adopt``) before its first
pass, and ``stop`` calls it too; every source of truth is read here in one order:

1. ``instances.json`` through ``state_file.load_state_safely`` (a bad file is moved
   aside with a log line; its valid entries still count);
2. the intent journal (``runtime.journal``): spawn records fill in launches the
   state file lost, open stop intents are finished, an open repartition is
   reported (the plan rolls it forward from the inventory as it is now);
3. the marked process groups in /proc (``runtime.markers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.reconcile.adoption import Recovery, recover
from gpu_sharing.runtime.health import HealthChecker
from gpu_sharing.runtime.journal import Journal
from gpu_sharing.runtime.markers import scan_marked, stop_group
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.state_file import StateEntry, load_state_safely
from gpu_sharing.runtime.supervisor import Supervisor

Progress = Callable[[str], None]


def recover_state_dir(state_dir: Path, supervisor: Supervisor, ports: PortAllocator, health: HealthChecker,
                      backend: PartitionBackend, *, grace_s: float, clock: Callable[[], float],
                      sleep: Callable[[float], None], progress: Progress) -> Recovery:
    read = load_state_safely(state_dir)
    if read.problem:
        progress(f"state file set aside: {read.problem}; rebuilding from the running processes")
    known: dict[str, StateEntry] = {e.instance_id: e for e in read.entries}
    replay = Journal(state_dir).replay()
    for problem in replay.problems:
        progress(f"journal: {problem}")
    known.update(replay.spawned)  # journaled after the last state write: the newer launch of that id
    stopping = set(replay.stopping)
    for gpu, target in sorted(replay.repartitioning.items()):
        progress(f"journal: the repartition of GPU {gpu} to {target} was interrupted; the next pass rolls "
                 "it forward from the modes the GPU has now")
    inventory: Inventory | None
    try:
        inventory = backend.inventory()
    except BackendError as e:
        progress(f"recovery without an inventory (stale devices not checked): {e}")
        inventory = None
    result = recover(known, scan_marked(state_dir), supervisor, ports, health, inventory,
                     stop_group=lambda pgid: stop_group(pgid, grace_s, clock=clock, sleep=sleep), stopping=stopping)
    for line in result.stopped:
        progress(f"stopped orphan {line}")
    for line in result.failed_stops:
        progress(f"could not stop orphan {line}")
    if result.dropped:
        progress(f"not restarting dead instance(s) as recorded: {', '.join(result.dropped)} "
                 "(the plan starts them from the current inventory)")
    return result


__all__ = ["recover_state_dir"]
