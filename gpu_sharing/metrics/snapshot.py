"""What the daemon knows at one instant, as plain frozen values.

Why a snapshot: the metrics collector, GET /status and `gpu-sharing status` all
read the same picture, built once per change by the daemon, so a scrape never
touches the backend or the supervisor's locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartitionSnapshot:
    gpu: int
    index: int
    hip_index: int
    cu_count: int
    vram_total_bytes: int
    vram_used_bytes: int


@dataclass(frozen=True)
class GpuSnapshot:
    gpu: int
    model: str
    compute_partition: str
    memory_partition: str
    partitions: tuple[PartitionSnapshot, ...] = ()


@dataclass(frozen=True)
class InstanceSnapshot:
    instance_id: str
    model: str
    replica: int
    served_names: tuple[str, ...]
    state: str
    pid: int | None
    port: int
    url: str
    partitions: tuple[str, ...]
    restarts: int
    last_error: str
    memory_budget_bytes: int
    vram_used_bytes: int = 0


@dataclass(frozen=True)
class NodeSnapshot:
    gpus: tuple[GpuSnapshot, ...] = ()
    instances: tuple[InstanceSnapshot, ...] = ()
    unplaceable: tuple[dict, ...] = ()
    config_generation: int = 0
    last_reconcile_at: float | None = None
    last_reconcile_ok: bool | None = None
    last_reconcile_error: str = ""
    events: tuple[dict, ...] = ()


INSTANCE_STATES = ("PENDING", "STAGING", "STARTING", "READY", "BACKOFF", "FAILED", "STOPPING", "STOPPED")


@dataclass
class DaemonCounters:
    """Monotonic counters and histogram samples the daemon accumulates (read by the collector)."""

    reconcile_durations_s: list[float] = field(default_factory=list)
    reload_total: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    router_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    router_durations_s: list[float] = field(default_factory=list)
    vram_violations: dict[tuple[str, str], int] = field(default_factory=dict)
    foreign_processes: int = 0
