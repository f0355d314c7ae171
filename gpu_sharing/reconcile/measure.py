"""Record what a READY instance really uses, so the next sizing prefers measured over estimated.

Why after READY: vLLM allocates its KV pool and captures graphs during start;
once /health answers, its VRAM is at its steady size. The backend's process
list gives VRAM per pid; vLLM's TP workers are separate processes of the same
process group, so the instance's usage is the sum over its group, divided by
tp for the per-rank figure the sizing layer stores.

Why a queue: the supervisor only reports "became READY"; the Reconciler drains
the queue after its tick, so the supervisor never calls back into the backend.
"""

from __future__ import annotations

from typing import Iterable

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.errors import GpuSharingError
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.reconcile.collaborators import MeasuredStore
from gpu_sharing.runtime.supervisor import InstanceLaunch, InstanceStatus


class MeasuredRecorder:
    def __init__(self, store: MeasuredStore):
        self.store = store
        self.pending: list[InstanceStatus] = []
        self.recorded: dict[str, int] = {}
        """instance id -> bytes per rank recorded (for status and tests)."""
        self.errors: list[str] = []

    def on_ready(self, status: InstanceStatus) -> None:
        """Supervisor callback: only queue (no I/O on the supervisor's path)."""
        self.pending.append(status)

    def drain(self, inventory: Inventory, launch_of: dict[str, InstanceLaunch], group_pids: dict[str, Iterable[int]],
              models: dict[str, ModelSettings]) -> None:
        pending, self.pending = self.pending, []
        for status in pending:
            launch, model = launch_of.get(status.instance_id), models.get(status.model)
            if status.pid is None or launch is None or model is None:
                continue
            pids = set(group_pids.get(status.instance_id, ())) | {status.pid}
            used = sum(p.vram_bytes for g in inventory.gpus for p in g.processes if p.pid in pids)
            if used <= 0:
                continue
            per_rank = used // max(1, launch.tp)
            try:
                self.store.record(model, launch.tp, per_rank)
            except (GpuSharingError, OSError, ValueError) as e:
                self.errors.append(f"{status.instance_id}: recording measured size: {e}")
                continue
            self.recorded[status.instance_id] = per_rank

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)
