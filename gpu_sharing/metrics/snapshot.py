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
class ModelSnapshot:
    """A configured model as the router lists it in /v1/models (also while nothing of it runs)."""

    name: str
    served_names: tuple[str, ...]
    source: str
    replicas: int
    lora_adapters: tuple[tuple[str, str], ...] = ()
    """(adapter name, path) served by each of its instances (``--lora-modules name=path``)."""
    held: bool = False


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
    models: tuple[ModelSnapshot, ...] = ()
    draining: frozenset[str] = frozenset()
    """Instance ids the router must stop sending to (a rolling change is about to stop them)."""


INSTANCE_STATES = ("PENDING", "STAGING", "STARTING", "READY", "BACKOFF", "FAILED", "STOPPING", "STOPPED")
