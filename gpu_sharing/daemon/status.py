"""The daemon's status snapshot: one frozen NodeSnapshot built on the worker thread.

Why frozen and rebuilt: /status, /metrics and the router read it from the event
loop while the worker thread reconciles; swapping one immutable object needs no lock.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Sequence

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.metrics.snapshot import GpuSnapshot, InstanceSnapshot, ModelSnapshot, NodeSnapshot, PartitionSnapshot
from gpu_sharing.reconcile.reconciler import Reconciler


def build_snapshot(reconciler: Reconciler, inventory: Inventory | None, *, generation: int,
                   last_reconcile_at: float | None, events: Sequence[dict],
                   draining: Iterable[str] = ()) -> NodeSnapshot:
    gpus_inv = inventory.gpus if inventory else ()
    vram_by_pid = {p.pid: p.vram_bytes for g in gpus_inv for part in g.partitions for p in part.processes}
    gpus = tuple(GpuSnapshot(g.index, g.model, g.compute_mode.value, g.memory_mode.value, tuple(
        PartitionSnapshot(p.gpu, p.index, p.hip_index, p.cu_count, p.vram_total_bytes, p.vram_used_bytes)
        for p in g.partitions)) for g in gpus_inv)
    instances = tuple(InstanceSnapshot(
        s.instance_id, s.model, s.replica, tuple(s.served_names), s.state.value, s.pid, s.port, s.url,
        tuple(s.partitions), s.restarts, s.last_error, s.memory_budget_bytes, vram_by_pid.get(s.pid or -1, 0))
        for s in reconciler.statuses())
    report = reconciler.last_report
    unplaceable = tuple({"model": u.model, "replica": u.replica, "reason": u.reason}
                        for u in (report.unplaceable if report else ()))
    held = reconciler.held_models
    models = tuple(ModelSnapshot(m.name, tuple(m.served_names), m.source, m.replicas,
                                 tuple(sorted(m.lora.modules.items())) if m.lora else (), m.name in held)
                   for m in reconciler.config.models if m.enabled)
    return NodeSnapshot(gpus, instances, unplaceable, generation, last_reconcile_at,
                        report.ok if report else None, "; ".join(report.errors) if report else "",
                        tuple(events[-50:]), models, frozenset(draining))


def status_json(snapshot: NodeSnapshot, reconciler: Reconciler, config_path: str) -> dict[str, Any]:
    """GET /status: the snapshot plus the solver line of the last plan and the config path."""
    out = asdict(snapshot)
    plan = reconciler.last_plan
    out["solver"] = asdict(plan.solver) if plan else None
    out["config_path"] = config_path
    out["held"] = reconciler.held
    out["held_models"] = reconciler.held_models
    out["draining"] = sorted(snapshot.draining)
    return out
