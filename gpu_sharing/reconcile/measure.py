"""Record what a READY instance really uses, so the next sizing prefers measured over estimated.

Why after READY: vLLM allocates its KV pool and captures graphs during start;
once /health answers, its VRAM is at its steady size. The backend's process
list gives VRAM per pid; vLLM's TP workers are separate processes of the same
process group, so the instance's usage is the sum over its group, divided by
tp for the per-rank figure the sizing layer stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpu_sharing.errors import GpuSharingError
from gpu_sharing.hardware.backend import BackendError
from gpu_sharing.reconcile import wiring
from gpu_sharing.runtime.spawner import group_pids
from gpu_sharing.runtime.supervisor import InstanceStatus

if TYPE_CHECKING:
    from gpu_sharing.reconcile.reconciler import Reconciler


class MeasuredRecorder:
    def __init__(self, reconciler: "Reconciler"):
        self.reconciler = reconciler
        self.recorded: dict[str, int] = {}
        """instance id -> bytes per rank recorded (for status and tests)."""
        self.errors: list[str] = []

    def on_ready(self, status: InstanceStatus) -> None:
        try:
            self._record(status)
        except (BackendError, GpuSharingError, OSError, ValueError, KeyError) as e:
            self.errors.append(f"{status.instance_id}: recording measured size: {e}")

    def _record(self, status: InstanceStatus) -> None:
        rec = self.reconciler
        if status.pid is None:
            return
        handle = rec.supervisor.handle_of(status.instance_id)
        pids = set(group_pids(handle.pgid)) if handle is not None else set()
        pids.add(status.pid)
        inventory = rec.backend.inventory()
        used = sum(p.vram_bytes for g in inventory.gpus for p in g.processes if p.pid in pids)
        if used <= 0:
            return
        model = next((m for m in rec.config.models if m.name == status.model), None)
        launch = next((ln for ln in rec.supervisor.launches() if ln.instance_id == status.instance_id), None)
        if model is None or launch is None:
            return
        per_rank = used // max(1, launch.tp)
        wiring.record_measured(rec.measured_path, model, launch.tp, per_rank)
        self.recorded[status.instance_id] = per_rank
