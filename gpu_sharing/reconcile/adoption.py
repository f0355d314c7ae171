"""Converting between supervised instances and state-file entries, and recovering instances on start.

Recovery rule (a Kubernetes controller's: observe the world, never trust a record of it):

* Our processes are found from the OS (``runtime.markers``: the instance id and the
  state dir are in every instance's environment), not from the state file, so a
  lost, corrupt or stale ``instances.json`` never makes us start a duplicate set.
* A marked process group is adopted when a launch record (state file, journal, or
  the record the process carries in its own environment) for that id names its
  process group (or its leader runs the recorded argv) and
  its partitions still exist with the recorded HIP indices. Every other marked
  group (no verifiable record, a duplicate of an id, a stop that was journaled but
  not finished, stale devices) is stopped: it would otherwise be an orphan
  holding VRAM.
* A record whose process is dead is dropped, never restarted with its old argv and
  devices (a repartition in between changes HIP indices and partition sizes): the
  normal plan re-derives it from the current inventory.
* Records without markers (written before markers existed) are adopted as before
  when the pid is alive and runs exactly the recorded argv; a live pid running
  something else (pid reuse) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from gpu_sharing.hardware.inventory import Inventory, PartitionRef
from gpu_sharing.runtime.health import HealthChecker
from gpu_sharing.runtime.markers import MarkedGroup
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.spawner import AdoptedHandle, ProcessHandle, argv_matches, pid_alive, read_cmdline
from gpu_sharing.runtime.state_file import StateEntry, identifiable
from gpu_sharing.runtime.supervisor import InstanceLaunch, InstanceStatus, Supervisor


def launch_to_entry(launch: InstanceLaunch, status: InstanceStatus | None, handle: ProcessHandle | None) -> StateEntry:
    """The state-file record; ``status`` None: a spawn intent (no process yet, journaled before the spawn)."""
    live = status is not None and status.pid is not None and handle is not None
    return StateEntry(
        instance_id=launch.instance_id, model=launch.model, replica=launch.replica, fingerprint=launch.fingerprint,
        served_names=launch.served_names, partitions=launch.partitions, hip_indices=launch.hip_indices,
        memory_bytes_per_rank=launch.memory_bytes_per_rank, tp=launch.tp,
        pid=handle.pid if live else None, pgid=handle.pgid if live else None, port=launch.port, url=launch.url,
        argv=launch.argv, started_at=status.started_at if status else None,
        state=status.state.value if status else "STARTING", env=launch.env)


def entry_to_launch(entry: StateEntry) -> InstanceLaunch:
    return InstanceLaunch(
        instance_id=entry.instance_id, model=entry.model, replica=entry.replica, fingerprint=entry.fingerprint,
        served_names=entry.served_names, partitions=entry.partitions, hip_indices=entry.hip_indices,
        memory_bytes_per_rank=entry.memory_bytes_per_rank, tp=entry.tp, argv=entry.argv, env=entry.env,
        port=entry.port, url=entry.url)


@dataclass(frozen=True)
class Recovery:
    adopted: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    """``<id> (pgid N): why`` for each marked group stopped as an orphan."""
    dropped: tuple[str, ...] = ()
    """Records whose process is dead: not restarted as recorded (the plan starts them afresh)."""
    failed_stops: tuple[str, ...] = ()


def stale_reason(entry: StateEntry, inventory: Inventory | None) -> str:
    """Why the recorded devices no longer describe the node ("" when they still do)."""
    if inventory is None:
        return ""
    if len(entry.partitions) != len(entry.hip_indices) or not entry.partitions:
        return "record has no consistent partitions"
    for text, hip in zip(entry.partitions, entry.hip_indices):
        gpu, _, index = text.partition(".")
        try:
            part = inventory.partition(PartitionRef(int(gpu), int(index)))
        except (KeyError, ValueError):
            return f"partition {text} no longer exists"
        if part.hip_index != hip:
            return f"partition {text} is now HIP device {part.hip_index}, recorded {hip}"
    return ""


def entry_from_marker(group: MarkedGroup) -> StateEntry | None:
    """The state-file entry a marked process carries about itself (markers.RECORD_ENV + cmdline + environ),
    for when every file record of it is lost; None when it carries none we can read."""
    r = group.record
    argv = read_cmdline(group.leader)
    if not r or not argv:
        return None
    try:
        return StateEntry.from_json({**r, "instance_id": group.instance_id, "pid": group.leader,
                                     "pgid": group.pgid, "argv": list(argv), "env": dict(group.env),
                                     "started_at": None, "state": "STARTING"})
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None


def _matches(entry: StateEntry, group: MarkedGroup) -> bool:
    if entry.pgid is not None and entry.pgid == group.pgid:
        return True
    return bool(entry.argv) and argv_matches(group.leader, entry.argv)


def recover(known: Mapping[str, StateEntry], marked: Sequence[MarkedGroup], supervisor: Supervisor,
            ports: PortAllocator, health: HealthChecker, inventory: Inventory | None, *,
            stop_group: Callable[[int], bool], stopping: Collection[str] = ()) -> Recovery:
    """Adopt, stop or drop per the module rule. ``known``: launch records by id (state file, then journal);
    ``stopping``: ids whose stop was journaled but not completed (finished now)."""
    by_id: dict[str, list[MarkedGroup]] = {}
    for g in marked:
        by_id.setdefault(g.instance_id, []).append(g)
    adopted: list[str] = []
    stopped: list[str] = []
    failed: list[str] = []
    dropped: list[str] = []
    for iid in sorted(set(known) | set(by_id)):
        if supervisor.state_of(iid) is not None:
            continue  # already supervised by this process
        groups = by_id.get(iid, [])
        entry = known.get(iid)
        if entry is None or not any(_matches(entry, g) for g in groups):
            entry = next((e for e in map(entry_from_marker, groups) if e is not None), entry)
        chosen, why = None, "no launch record names this process group"
        if iid in stopping:
            why = "its stop was journaled but not finished"
        elif entry is not None:
            chosen = next((g for g in groups if _matches(entry, g)), None)
            why = stale_reason(entry, inventory) if chosen else why
            if why and chosen:
                chosen = None  # stale devices: stop it; the plan starts a fresh one
            else:
                why = why or "duplicate of an adopted instance"
        for g in groups:
            if g is chosen:
                continue
            (stopped if stop_group(g.pgid) else failed).append(f"{iid} (pgid {g.pgid}): {why}")
        if chosen is not None and entry is not None:
            supervisor.adopt(entry_to_launch(entry), AdoptedHandle(chosen.leader, chosen.pgid),
                             started_at=entry.started_at or 0.0, healthy=health(entry.url))
            ports.reserve(entry.port)
            adopted.append(iid)
        elif not groups and entry is not None and iid not in stopping and identifiable(entry) \
                and not stale_reason(entry, inventory):
            assert entry.pid is not None  # an unmarked instance from before markers: argv is the proof
            supervisor.adopt(entry_to_launch(entry), AdoptedHandle(entry.pid, entry.pgid or entry.pid),
                             started_at=entry.started_at or 0.0, healthy=health(entry.url))
            ports.reserve(entry.port)
            adopted.append(iid)
        elif not groups and entry is not None and not (entry.pid is not None and pid_alive(entry.pid)):
            dropped.append(iid)
    return Recovery(tuple(adopted), tuple(stopped), tuple(dropped), tuple(failed))


__all__ = ["Recovery", "entry_to_launch", "launch_to_entry", "recover", "stale_reason"]
