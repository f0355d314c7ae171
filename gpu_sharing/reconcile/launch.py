"""From a placement to an InstanceLaunch: vLLM argv/env, CU masks, and confinement.

Why here (reconcile) and not in runtime: a launch needs the placement (planner),
the partitions of the NEW inventory (after a repartition, HIP indices change),
the model's limits (isolation) and the launch spec (runtime); the reconcile layer
is the lowest that sees all four. The Reconciler receives ``build_launch`` and
``cu_masks_for`` as injected collaborators (see ``collaborators.py``).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.errors import OperationError
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition
from gpu_sharing.isolation import ComputeLimits, ResourceIsolator
from gpu_sharing.isolation.visibility import apply_visibility
from gpu_sharing.planner.types import Placement
from gpu_sharing.reconcile.cu_sharing import cu_masks_for  # noqa: F401 - re-exported (the Reconciler's default)
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.runtime.supervisor import InstanceLaunch

SYS_NODE_DIR = "/sys/devices/system/node"


def build_launch(placement: Placement, partitions: Sequence[LogicalPartition], port: int, cu_mask: str | None,
                 inventory: Inventory, *, config: Config, fingerprint: str) -> InstanceLaunch:
    """argv/env from runtime.launch_spec; confinement from isolation: a preexec hook (CPU pinning to the
    GPU's NUMA node, user drop) for the direct launcher, or a systemd-run wrapper around argv."""
    model = next((m for m in config.models if m.name == placement.model), None)
    if model is None:
        raise OperationError(f"{placement.instance_id}: model {placement.model!r} is not in the config")
    spec = build_launch_spec(
        instance_id=placement.instance_id, model=model, vllm=config.vllm, partitions=list(partitions),
        tp=placement.tp, port=port, memory_bytes_per_rank=placement.memory_bytes_per_rank, cu_mask=cu_mask)
    # Devices by ROCR_VISIBLE_DEVICES, right inside the launcher's confinement, so the mask's "0:" is ours.
    env, _ = apply_visibility(spec.env, [p.hip_index for p in partitions], config.node.launcher)
    argv, preexec = _confine(config, model, placement, spec.argv, env, partitions, inventory)
    return InstanceLaunch(
        instance_id=placement.instance_id, model=placement.model, replica=placement.replica,
        fingerprint=fingerprint, served_names=tuple(spec.served_names),
        partitions=tuple(str(ref) for ref in placement.partitions),
        hip_indices=tuple(p.hip_index for p in partitions), memory_bytes_per_rank=placement.memory_bytes_per_rank,
        tp=placement.tp, argv=tuple(argv), env=tuple(sorted(env.items())), port=port,
        url=spec.url, preexec_fn=preexec)


def _confine(config: Config, model: ModelSettings, placement: Placement, spec_argv: Sequence[str],
             env: dict[str, str], partitions: Sequence[LogicalPartition], inventory: Inventory) -> tuple[list[str], Callable[[], None] | None]:
    isolator = ResourceIsolator(launcher=config.node.launcher)
    limits = ComputeLimits.from_settings(model.limits)
    try:
        numa_node: int | None = inventory.gpu(placement.gpu).numa_node
    except KeyError:
        numa_node = None
    if numa_node is not None and not os.path.isdir(os.path.join(SYS_NODE_DIR, f"node{numa_node}")):
        numa_node = None  # the host has no such NUMA node (a simulated GPU, or NUMA off): no CPU pinning
    argv = isolator.wrap_argv(instance_id=placement.instance_id, argv=list(spec_argv), env=env,
                              limits=limits, partitions=list(partitions), numa_node=numa_node)
    return argv, isolator.preexec_for(limits, numa_node)
