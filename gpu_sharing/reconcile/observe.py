"""Observe what runs now, for the planner: the state file, filtered to processes that are really ours.

Why the state file and not the GPU process list: the backend sees pids and VRAM,
but not which model, replica or config fingerprint a process serves. The state
file records that; /proc confirms the pid still runs the recorded argv (pids
are reused, and an entry for a dead process must not pin its partition).
"""

from __future__ import annotations

from pathlib import Path

from gpu_sharing.config.schema import Config
from gpu_sharing.hardware.inventory import Inventory, PartitionRef
from gpu_sharing.planner.types import RunningInstance
from gpu_sharing.runtime.state_file import StateEntry, identifiable, read_state


def parse_partition(text: str) -> PartitionRef:
    gpu, _, index = text.partition(".")
    return PartitionRef(int(gpu), int(index))


def entry_to_running(entry: StateEntry) -> RunningInstance:
    return RunningInstance(
        instance_id=entry.instance_id, model=entry.model, replica=entry.replica, fingerprint=entry.fingerprint,
        partitions=tuple(parse_partition(p) for p in entry.partitions),
        memory_bytes_per_rank=entry.memory_bytes_per_rank)


def running_instances(config: Config, inventory: Inventory, state_dir: Path | str) -> tuple[RunningInstance, ...]:
    """Instances recorded in <state_dir>/instances.json whose process is alive and ours.

    ``config`` and ``inventory`` are accepted so callers need not know the
    filter: entries naming a GPU the node does not have are dropped too (the
    planner cannot keep an instance on a partition that does not exist).
    """
    del config  # models removed from the config are still running: the planner must see them to stop them
    try:
        entries = read_state(Path(state_dir))
    except ValueError:
        return ()
    gpus = {g.index for g in inventory.gpus}
    out = []
    for e in entries:
        if not identifiable(e):
            continue
        try:
            running = entry_to_running(e)
        except ValueError:
            continue
        if all(p.gpu in gpus for p in running.partitions):
            out.append(running)
    return tuple(sorted(out, key=lambda r: r.instance_id))
