"""Late-bound links from the reconciler to sibling components (planner, demands, launch spec, isolation, sizing).

Why a separate module: these are the only places where the reconcile layer
calls into code owned by other parts of the project; keeping the adapters here
keeps reconciler.py about orchestration, and gives one spot that says what is
missing ("the planner is not installed") instead of an ImportError deep inside
a reconcile pass.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from gpu_sharing.config.schema import ComputeLimitsSettings, Config, ModelSettings
from gpu_sharing.errors import OperationError
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition
from gpu_sharing.planner.types import ModelDemand, Placement, Plan, PlannerPolicy, Unplaceable
from gpu_sharing.runtime.supervisor import InstanceLaunch

SYS_NODE_DIR = "/sys/devices/system/node"
RESTART_RELEVANT_VLLM_KEYS = {"command", "host", "memory_flag", "vllm_args", "env"}
DemandResult = tuple[Sequence[ModelDemand], PlannerPolicy, Sequence[Unplaceable]]


def _module(name: str, what: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise OperationError(f"{what} is not available ({name}: {e})") from None


def build_demands(config: Config, *, config_dir: Path | None, measured_path: Path | None,
                  active: dict[str, bool] | None = None, gpu_indices: Sequence[int] = ()) -> DemandResult:
    """gpu_sharing.reconcile.demands -> (demands, policy, unplaceable)."""
    from gpu_sharing.reconcile import demands as demands_mod

    measured = load_measured(measured_path) if measured_path is not None else None
    return demands_mod.build_demands(config, config_dir=config_dir, measured=measured, active=active,
                                     gpu_indices=gpu_indices)


def run_planner(inventory: Inventory, demands: Sequence[ModelDemand], current: Sequence[Any],
                policy: PlannerPolicy) -> Plan:
    return _module("gpu_sharing.planner", "the planner").plan(inventory, demands, current, policy)


def load_measured(path: Path) -> Any:
    mod = _module("gpu_sharing.sizing.measured_store", "measured sizes")
    return mod.MeasuredSizes.load(path)


def record_measured(path: Path, model: ModelSettings, tp: int, bytes_per_rank: int) -> None:
    """Record an instance's measured VRAM per rank under the sizing layer's own key."""
    mod = _module("gpu_sharing.sizing.measured_store", "measured sizes")
    key_fn = next((getattr(mod, n) for n in ("measured_key", "key_for", "sizing_key", "make_key") if hasattr(mod, n)),
                  None) or getattr(mod.MeasuredSizes, "key_for", None)
    if key_fn is None:
        raise OperationError("gpu_sharing.sizing.measured_store has no key function")
    store = mod.MeasuredSizes.load(path)
    store.record(key_fn(model, tp=tp), int(bytes_per_rank))
    store.save(path)


NOT_RESTART_RELEVANT_MODEL_KEYS = {"replicas", "priority", "enabled", "schedule", "gpus"}
"""Changing these moves or adds replicas; it never restarts the ones that keep running."""


def model_fingerprint(model: ModelSettings, config: Config) -> str:
    """Everything that needs a restart when changed: the model's settings and the vLLM settings that reach
    its command line or environment (supervision knobs such as timeouts or backoff do not)."""
    blob = json.dumps({"model": model.model_dump(mode="json", exclude=NOT_RESTART_RELEVANT_MODEL_KEYS),
                       "vllm": config.vllm.model_dump(mode="json", include=RESTART_RELEVANT_VLLM_KEYS)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cu_masks_for(plan: Plan, inventory: Inventory, config: Config) -> dict[str, str]:
    """HSA_CU_MASK per new instance on partitions shared by several instances (gpu_sharing.isolation).

    Masks are computed over every placement on the partition (running ones
    included) so the new instance gets CUs disjoint from its neighbours' share.
    """
    iso = _module("gpu_sharing.isolation", "isolation")
    isolator = iso.ResourceIsolator(launcher=config.node.launcher)
    models = {m.name: m for m in config.models}
    by_partition: dict[Any, list[Placement]] = {}
    for p in plan.placements:
        for ref in p.partitions:
            by_partition.setdefault(ref, []).append(p)
    starting = {p.instance_id for p in plan.to_start}
    masks: dict[str, str] = {}
    for ref, group in sorted(by_partition.items()):
        if len(group) < 2 or not any(p.instance_id in starting for p in group):
            continue
        members = {p.instance_id: _limits(iso, p, models.get(p.model)) for p in group}
        tp = {p.instance_id: p.tp for p in group}
        for iid, mask in isolator.cu_masks(inventory.partition(ref), members, tp).items():
            if iid in starting and iid not in masks:
                masks[iid] = mask
    return masks


def _limits(iso: Any, p: Placement, model: ModelSettings | None) -> Any:
    settings = model.limits if model is not None else ComputeLimitsSettings()
    if p.compute_share is not None and settings.compute_share is None and settings.cu_count is None:
        settings = settings.model_copy(update={"compute_share": p.compute_share})
    return iso.ComputeLimits.from_settings(settings)


def make_launch_builder(config_fn: Callable[[], Config], fingerprints: Callable[[str], str],
                        ) -> Callable[[Placement, Sequence[LogicalPartition], int, "str | None", Inventory], InstanceLaunch]:
    """(placement, partitions, port, cu_mask, inventory) -> InstanceLaunch.

    argv/env from runtime.launch_spec.build_launch_spec; confinement from
    gpu_sharing.isolation: a preexec hook (CPU pinning to the GPU's NUMA node,
    user drop) for the direct launcher, or a systemd-run wrapper around argv.
    """
    def build(placement: Placement, partitions: Sequence[LogicalPartition], port: int,
              cu_mask: str | None, inventory: Inventory) -> InstanceLaunch:
        config = config_fn()
        model = next((m for m in config.models if m.name == placement.model), None)
        if model is None:
            raise OperationError(f"{placement.instance_id}: model {placement.model!r} is not in the config")
        spec_mod = _module("gpu_sharing.runtime.launch_spec", "the vLLM launch spec")
        spec = spec_mod.build_launch_spec(
            instance_id=placement.instance_id, model=model, vllm=config.vllm, partitions=list(partitions),
            tp=placement.tp, port=port, memory_bytes_per_rank=placement.memory_bytes_per_rank, cu_mask=cu_mask)
        argv, preexec = _confine(config, model, placement, spec, partitions, inventory)
        return InstanceLaunch(
            instance_id=placement.instance_id, model=placement.model, replica=placement.replica,
            fingerprint=fingerprints(placement.model), served_names=tuple(spec.served_names),
            partitions=tuple(str(ref) for ref in placement.partitions),
            hip_indices=tuple(p.hip_index for p in partitions), memory_bytes_per_rank=placement.memory_bytes_per_rank,
            tp=placement.tp, argv=tuple(argv), env=tuple(sorted(dict(spec.env).items())), port=port,
            url=spec.url, preexec_fn=preexec)
    return build


def _confine(config: Config, model: ModelSettings, placement: Placement, spec: Any,
             partitions: Sequence[LogicalPartition], inventory: Inventory) -> tuple[list[str], Any]:
    iso = _module("gpu_sharing.isolation", "isolation")
    isolator = iso.ResourceIsolator(launcher=config.node.launcher)
    limits = iso.ComputeLimits.from_settings(model.limits)
    try:
        numa_node: int | None = inventory.gpu(placement.gpu).numa_node
    except KeyError:
        numa_node = None
    if numa_node is not None and not os.path.isdir(os.path.join(SYS_NODE_DIR, f"node{numa_node}")):
        numa_node = None  # the host has no such NUMA node (a simulated GPU, or NUMA off): no CPU pinning
    argv = isolator.wrap_argv(instance_id=placement.instance_id, argv=list(spec.argv), env=dict(spec.env),
                              limits=limits, partitions=list(partitions), numa_node=numa_node)
    return argv, isolator.preexec_for(limits, numa_node)
