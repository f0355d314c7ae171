"""Operator commands on a running node: restart, hold, release (what ``gpu-sharing restart|hold|release``
and ``stop MODEL`` under a running daemon call through the API).

Why separate from the Reconciler: these resolve an operator's target (a model name or an
instance id) against what is configured and supervised, and report what they did; the
Reconciler only offers the primitives (``supervisor.restart``, ``hold_model``, ``stop_instances``).
A hold is never a crash: the instance is stopped on purpose and kept out of the plan until
released, across config reloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_sharing.errors import UserError
from gpu_sharing.runtime.events import Event, EventKind

if TYPE_CHECKING:  # pragma: no cover
    from gpu_sharing.reconcile.reconciler import Reconciler


@dataclass(frozen=True)
class OperationResult:
    action: str
    target: str
    instances: tuple[str, ...]
    """Instances acted on (restarted, stopped or released)."""
    message: str

    def as_dict(self) -> dict:
        return {"action": self.action, "target": self.target, "instances": list(self.instances),
                "message": self.message}


def _configured(rec: "Reconciler") -> dict[str, int]:
    return {m.name: m.replicas for m in rec.config.models if m.enabled}


def instances_of(rec: "Reconciler", target: str) -> tuple[str | None, list[str]]:
    """(model, instance ids) for a model name or an instance id; UserError naming what exists otherwise."""
    launches = rec.supervisor.launches()
    if target in _configured(rec) or any(ln.model == target for ln in launches):
        return target, sorted(ln.instance_id for ln in launches if ln.model == target)
    match = [ln for ln in launches if ln.instance_id == target]
    if match:
        return None, [target]
    known = sorted(set(_configured(rec)) | {ln.instance_id for ln in launches})
    raise UserError(f"no model or instance named {target!r}; known: {', '.join(known) or 'none'}")


def restart(rec: "Reconciler", target: str) -> OperationResult:
    """Restart a model's instances (or one instance); clears FAILED and any hold on the model."""
    model, ids = instances_of(rec, target)
    released = rec.release_model(model) if model else False
    if released:
        rec.events(Event(EventKind.RELEASE, "released by restart", model=model or ""))
    done = [i for i in ids if rec.supervisor.restart(i)]
    what = f"restarting {', '.join(done)}" if done else "nothing supervised yet"
    if released:
        what += "; hold released (the next reconcile starts its replicas)"
    return OperationResult("restart", target, tuple(done), what)


def hold(rec: "Reconciler", model: str, reason: str = "operator hold") -> OperationResult:
    """Stop every instance of a model and keep it stopped until ``release`` (a reload does not release it)."""
    found, ids = instances_of(rec, model)
    if found is None:
        raise UserError(f"hold takes a model name, not an instance id ({model!r})")
    rec.hold_model(model, reason)
    rec.events(Event(EventKind.HOLD, f"{reason}: stopping {', '.join(ids) or 'no running instance'}", model=model))
    stopped = rec.stop_instances(ids, rec.config.vllm.stop_grace_s + 5) if ids else []
    return OperationResult("hold", model, tuple(stopped), f"held; stopped {len(stopped)} instance(s)")


def release(rec: "Reconciler", model: str) -> OperationResult:
    found, _ = instances_of(rec, model)
    if found is None:
        raise UserError(f"release takes a model name, not an instance id ({model!r})")
    if not rec.release_model(model):
        return OperationResult("release", model, (), "was not held")
    rec.events(Event(EventKind.RELEASE, "released by operator", model=model))
    return OperationResult("release", model, (), "released; the next reconcile starts its replicas")
