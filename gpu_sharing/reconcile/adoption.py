"""Converting between supervised instances and state-file entries, and adopting entries on start.

Adoption rule (never kill what we cannot identify): an entry whose pid is alive
and runs exactly the recorded argv is ours: it is adopted (READY when /health
answers, else STARTING so the start timeout still applies). An entry whose
process died is restarted as recorded (same argv, env, port, partitions) when
its model is still in the config; the next reconcile corrects anything stale.
A live pid running something else (pid reuse) is left alone and forgotten.
"""

from __future__ import annotations

from gpu_sharing.config.schema import Config
from gpu_sharing.runtime.health import HealthChecker
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.spawner import AdoptedHandle, ProcessHandle, pid_alive
from gpu_sharing.runtime.state_file import StateEntry, identifiable
from gpu_sharing.runtime.supervisor import InstanceLaunch, InstanceStatus, Supervisor


def launch_to_entry(launch: InstanceLaunch, status: InstanceStatus, handle: ProcessHandle | None) -> StateEntry:
    live = status.pid is not None and handle is not None
    return StateEntry(
        instance_id=launch.instance_id, model=launch.model, replica=launch.replica, fingerprint=launch.fingerprint,
        served_names=launch.served_names, partitions=launch.partitions, hip_indices=launch.hip_indices,
        memory_bytes_per_rank=launch.memory_bytes_per_rank, tp=launch.tp,
        pid=handle.pid if live else None, pgid=handle.pgid if live else None, port=launch.port, url=launch.url,
        argv=launch.argv, started_at=status.started_at, state=status.state.value, env=launch.env)


def entry_to_launch(entry: StateEntry) -> InstanceLaunch:
    return InstanceLaunch(
        instance_id=entry.instance_id, model=entry.model, replica=entry.replica, fingerprint=entry.fingerprint,
        served_names=entry.served_names, partitions=entry.partitions, hip_indices=entry.hip_indices,
        memory_bytes_per_rank=entry.memory_bytes_per_rank, tp=entry.tp, argv=entry.argv, env=entry.env,
        port=entry.port, url=entry.url)


def adopt_entries(entries: list[StateEntry], supervisor: Supervisor, ports: PortAllocator,
                  health: HealthChecker, config: Config, *, restart_dead: bool = True) -> list[str]:
    """Returns the ids of live instances taken over (same pids)."""
    models = {m.name for m in config.models if m.enabled}
    adopted: list[str] = []
    for entry in entries:
        if supervisor.state_of(entry.instance_id) is not None:
            continue  # already supervised by this process
        launch = entry_to_launch(entry)
        if identifiable(entry):
            assert entry.pid is not None
            handle = AdoptedHandle(entry.pid, entry.pgid or entry.pid)
            supervisor.adopt(launch, handle, started_at=entry.started_at or 0.0, healthy=health(entry.url))
            ports.reserve(entry.port)
            adopted.append(entry.instance_id)
        elif entry.pid is not None and pid_alive(entry.pid):
            continue  # pid reused by someone else: not ours, never signal it
        elif restart_dead and entry.model in models and entry.argv and entry.state not in ("FAILED", "STOPPED"):
            supervisor.add(launch)  # died while nobody watched: restart as recorded
            ports.reserve(entry.port)
    return adopted
