"""From the Config to planner inputs: one ModelDemand per model (sized per allowed tp) and the policy.

A model that cannot be sized (no catalog entry, no config.json) becomes an
Unplaceable entry with the sizing error as its reason; it never stops the
reconcile of the other models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from gpu_sharing.config.intake import check_hf_config
from gpu_sharing.config.loader import load_sizing_catalog, resolve_relative
from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.config.sizing_catalog import SizingCatalog
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.planner.types import GpuPolicy, ModelDemand, PlannerPolicy, PreemptPolicy, Unplaceable
from gpu_sharing.reconcile.drain import drains_node
from gpu_sharing.reconcile.fingerprint import model_fingerprint
from gpu_sharing.sizing import size_model
from gpu_sharing.sizing.measured_store import MeasuredSizes
from gpu_sharing.sizing.resolve import min_partition_bytes, model_config_json

TP_CHOICES = (1, 2, 4, 8)


def policy_from_config(config: Config, gpu_indices: Sequence[int] = ()) -> PlannerPolicy:
    gpus: list[GpuPolicy] = []
    for entry in config.gpus:
        devices = list(gpu_indices) if entry.devices == "all" else entry.devices
        c = None if entry.compute_partition == "auto" else ComputePartitionMode(entry.compute_partition)
        m = None if entry.memory_partition == "auto" else MemoryPartitionMode(entry.memory_partition)
        if c is None and m is None:
            continue
        gpus += [GpuPolicy(gpu=d, compute_mode=c, memory_mode=m) for d in devices]
    return PlannerPolicy(gpus=tuple(gpus), allow_driver_reload=config.node.allow_driver_reload,
                         headroom_fraction=config.planner.headroom_fraction,
                         spread_replicas=config.planner.spread_replicas,
                         time_budget_s=config.reconcile.solver_time_budget_s,
                         preempt=PreemptPolicy(config.planner.preempt),
                         prefer_local_tp=config.planner.prefer_local_tp,
                         repartition_drains_node=drains_node(config))


def _catalog(config: Config, config_dir: Path | None) -> SizingCatalog | None:
    if not config.sizing.catalog:
        return None
    base = (config_dir or Path.cwd()) / "_"
    return load_sizing_catalog(resolve_relative(base, config.sizing.catalog))


def demand_for(model: ModelSettings, config: Config, *, catalog, measured, config_dir, replicas: int | None = None) -> ModelDemand:
    hf_cache_dir = Path(config.sizing.hf_cache_dir) if config.sizing.hf_cache_dir else None
    found = model_config_json(model, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
    heads = None
    if found:
        check_hf_config(found[0], found[1])  # bad numbers: this model is unplaceable, the others still place
        from gpu_sharing.sizing import attention_heads

        heads = attention_heads(found[0])
    tps = (model.tensor_parallel_size,) if model.tensor_parallel_size else TP_CHOICES
    sizes: dict[int, int] = {}
    for tp in tps:
        if heads and heads % tp:
            continue
        size = size_model(model, tp=tp, catalog=catalog, measured=measured, config_dir=config_dir,
                          hf_cache_dir=hf_cache_dir)
        per_rank = size.total_bytes_per_rank
        if model.limits.memory_bytes:
            per_rank = max(per_rank, model.limits.memory_bytes) if size.source.value == "measured" else model.limits.memory_bytes
        sizes[tp] = per_rank
    min_partition = min_partition_bytes(model, catalog)  # recommended_partition_gb as a placement floor
    return ModelDemand(name=model.name, replicas=model.replicas if replicas is None else replicas,
                       priority=model.priority, bytes_per_rank_by_tp=sizes, fingerprint=model_fingerprint(model, config),
                       compute_share=model.limits.compute_share, min_partition_bytes=min_partition,
                       allowed_gpus=tuple(model.gpus) if model.gpus is not None else None, attention_heads=heads,
                       cu_count=model.limits.cu_count)


def build_demands(config: Config, *, config_dir: Path | None = None, measured: MeasuredSizes | None = None,
                  gpu_indices: Sequence[int] = (), active: Mapping[str, bool] | None = None,
                  replica_targets: Mapping[str, int] | None = None,
                  ) -> tuple[tuple[ModelDemand, ...], PlannerPolicy, tuple[Unplaceable, ...]]:
    """``active`` maps model names to whether their schedule window is open (closed -> 0 replicas);
    ``replica_targets`` are the autoscaler's counts for models with ``scaling`` (default: min_replicas)."""
    try:
        catalog = _catalog(config, config_dir)
    except UserError as e:
        catalog = None
        catalog_problem = str(e)
    else:
        catalog_problem = ""
    demands: list[ModelDemand] = []
    problems: list[Unplaceable] = []
    for model in config.models:
        if not model.enabled:
            continue
        replicas = model.replicas if model.scaling is None else (replica_targets or {}).get(
            model.name, model.scaling.min_replicas)
        if active is not None and not active.get(model.name, True):
            replicas = 0
        try:
            demands.append(demand_for(model, config, catalog=catalog, measured=measured, config_dir=config_dir,
                                      replicas=replicas))
        except (UserError, ArithmeticError, ValueError, TypeError) as e:  # one model's sizing never stops the rest
            text = str(e) if isinstance(e, UserError) else f"sizing failed: {type(e).__name__}: {e}"
            reason = text + (f" (sizing catalog: {catalog_problem})" if catalog_problem else "")
            problems += [Unplaceable(model.name, r, reason) for r in range(max(1, replicas))]
    return tuple(demands), policy_from_config(config, gpu_indices), tuple(problems)
