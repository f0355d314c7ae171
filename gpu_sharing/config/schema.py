"""The daemon config (``config/gpu-sharing.yaml``), version v1, strict.

Every model forbids unknown keys so a typo is an error naming the key, not a
silently ignored setting. Field docstrings become the JSON Schema descriptions
(``gpu-sharing schema``), which editors show while the YAML is typed.

This module holds the top level (``Config``), the ``vllm`` section and the small daemon-wide sections;
``node_schema`` holds ``node`` and ``gpus``, ``model_schema`` the ``models`` entries, ``strict`` the shared
base. Every name callers import from here is re-exported, so ``from gpu_sharing.config.schema import X`` keeps
working for all of them.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpu_sharing.config.model_schema import (ComputeLimitsSettings, LoraSettings, MemoryPolicy, ModelSettings,
                                             ScalingSettings, ScheduleWindow, SpeculativeSettings, VllmArgs)
from gpu_sharing.config.node_schema import (BackendKind, GpuSettings, KfdModeSwitch, LauncherKind, NodeSettings,
                                            SimulatorSettings)
from gpu_sharing.config.strict import NAME_PATTERN, Strict, known_gpu_model
from gpu_sharing.config.units import ByteSize
from gpu_sharing.hardware.catalog import get_spec

__all__ = [
    "NAME_PATTERN", "ApiSettings", "BackendKind", "ComputeLimitsSettings", "Config", "GpuSettings", "KfdModeSwitch",
    "LauncherKind", "LoraSettings", "MemoryFlag", "MemoryPolicy", "MetricsSettings", "ModelSettings", "NodeSettings",
    "OnExit", "PlannerSettings", "ReconcileSettings", "ScalingSettings", "ScheduleWindow", "SimulatorSettings",
    "SizingSettings", "SpeculativeSettings", "Strict", "VllmSettings", "known_gpu_model",
]


class OnExit(str, Enum):
    STOP = "stop"
    KEEP = "keep"


class MemoryFlag(str, Enum):
    UTILIZATION = "gpu-memory-utilization"
    KV_CACHE_BYTES = "kv-cache-memory-bytes"


class VllmSettings(Strict):
    command: list[str] = ["vllm", "serve"]
    """argv prefix; e.g. a container wrapper, or [python, -m, simulator.vllm_server]."""
    host: str = "127.0.0.1"
    port_range: tuple[int, int] = (8100, 8999)
    startup_timeout_s: float = Field(900.0, gt=0, le=86400)
    stop_grace_s: float = Field(30.0, ge=0, le=3600)
    health_interval_s: float = Field(10.0, gt=0, le=3600)
    max_restarts: int = Field(5, ge=0, le=1000)
    restart_window_s: float = Field(600.0, gt=0)
    backoff_initial_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    memory_flag: MemoryFlag = MemoryFlag.UTILIZATION
    """gpu-memory-utilization: the sized budget as a fraction of the partition. kv-cache-memory-bytes: the
    sized KV pool passed as bytes, plus the budget's fraction (vLLM 0.33 still checks free memory against
    gpu_memory_utilization at start-up, vllm/v1/worker/utils.py:716 request_memory)."""
    vllm_args: VllmArgs = {}
    env: dict[str, str] = {}
    stage_weights: bool = False
    """Download (huggingface_hub) and verify weights before starting an instance (state STAGING);
    off: vLLM fetches them itself at start."""
    staging_budget_bytes: ByteSize | None = None
    """Disk budget for staged weights; default: the free space of the cache's disk."""
    log_dir: str | None = None
    """Per-instance logs; default: <state_dir>/logs."""
    cache_dir: str | None = None
    """Root of the caches of launched vLLMs (HF_HOME, VLLM_CACHE_ROOT, TRITON_CACHE_DIR, XDG_CACHE_HOME, MIOpen);
    default: <node.state_dir>/cache. A variable set in vllm.env, a model's env or the daemon's environment wins."""
    log_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    log_backups: int = Field(3, ge=0, le=100)

    @field_validator("port_range")
    @classmethod
    def _ports(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not (1024 <= lo <= hi <= 65535):
            raise ValueError(f"port_range must be [low, high] with 1024 <= low <= high <= 65535, got {list(v)}")
        return v


class ApiSettings(Strict):
    host: str = "127.0.0.1"
    """Listen address. Keep loopback unless a proxy in front handles TLS and auth."""
    port: int = Field(8080, ge=0, le=65535)
    token_file: str | None = None
    """File with the bearer token required for state-changing endpoints (POST /admin/*)."""
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    retry_after_s: int = Field(5, ge=1)


class MetricsSettings(Strict):
    enabled: bool = True


class ReconcileSettings(Strict):
    interval_s: float = Field(30.0, gt=0, le=86400)
    solver_time_budget_s: float = Field(2.0, gt=0, le=600)
    vram_check_interval_s: float = Field(15.0, gt=0, le=86400)
    config_settle_s: float = Field(2.0, ge=0, le=600)
    """A changed config file (or sizing catalog) is applied only once its content has been unchanged this long,
    so an editor's non-atomic save (truncate, then write in pieces) is never applied half-written. Replace the
    file atomically (write a temp file, then rename) to have it picked up on the next check after this delay."""


class PlannerSettings(Strict):
    headroom_fraction: float = Field(0.03, ge=0, lt=0.5)
    """Share of each partition left free (fragmentation, HIP context of neighbours)."""
    spread_replicas: bool = True
    preempt: Literal["strictly_higher_priority", "never", "any_gain"] = "strictly_higher_priority"
    """When a running instance of an unchanged model may be stopped or moved: only for a gain in
    strictly higher priority (default), never, or for any gain in placed priority."""
    prefer_local_tp: bool = False
    """Keep the planner's fast rules (smallest tp that fits, one GPU per model one GPU can hold);
    its proof is then against those rules, not the hardware's full set of placements."""


class SizingSettings(Strict):
    catalog: str | None = None
    """Seed-format sizing catalog (config/model_sizing_config.yaml); relative to this file."""
    hf_cache_dir: str | None = None
    """Where to look first for a model's config.json in a Hugging Face cache (then $HF_HUB_CACHE, $HF_HOME/hub,
    ~/.cache/huggingface/hub)."""


class Config(Strict):
    version: Literal["v1"]
    """Schema version; must be v1."""
    node: NodeSettings = NodeSettings()
    gpus: list[GpuSettings] = [GpuSettings()]
    models: list[ModelSettings] = []
    vllm: VllmSettings = VllmSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    planner: PlannerSettings = PlannerSettings()
    sizing: SizingSettings = SizingSettings()
    on_exit: OnExit = OnExit.STOP
    """When the daemon stops: stop its instances, or keep them for the next daemon to adopt."""

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        _check_unique_names(self.models)
        _check_gpu_entries(self)
        return self

    def gpu_model(self, simulate: bool = False) -> str | None:
        return self.node.simulator.gpu_model if simulate and self.node.gpu_model is None else self.node.gpu_model


def _check_unique_names(models: list[ModelSettings]) -> None:
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        for n in m.served_names:
            if n in seen:
                raise ValueError(f"models[{i}]: served name {n!r} is already used by models[{seen[n]}]; names and aliases must be unique")
            seen[n] = i


def _check_gpu_entries(cfg: Config) -> None:
    covered: dict[int, int] = {}
    all_entries = [i for i, g in enumerate(cfg.gpus) if g.devices == "all"]
    if len(all_entries) > 1 or (all_entries and len(cfg.gpus) > 1):
        raise ValueError("gpus: an entry with devices: all must be the only entry")
    for i, g in enumerate(cfg.gpus):
        if isinstance(g.devices, list):
            for d in g.devices:
                if d in covered:
                    raise ValueError(f"gpus[{i}].devices: GPU {d} is already configured by gpus[{covered[d]}]")
                covered[d] = i
    model = cfg.node.gpu_model or (cfg.node.simulator.gpu_model if cfg.node.backend == BackendKind.SIMULATED else None)
    if model is None:
        return
    spec = get_spec(model)
    for i, g in enumerate(cfg.gpus):
        c, m = g.compute_partition, g.memory_partition
        if c != "auto" and c not in spec.compute_modes():
            raise ValueError(f"gpus[{i}].compute_partition: {c.value} is not valid on {spec.name}; allowed: auto, {', '.join(x.value for x in spec.compute_modes())} (pairs: {spec.describe_valid_pairs()})")
        if m != "auto" and m not in spec.memory_modes():
            raise ValueError(f"gpus[{i}].memory_partition: {m.value} is not valid on {spec.name}; allowed: auto, {', '.join(x.value for x in spec.memory_modes())}")
        if c != "auto" and m != "auto" and not spec.is_valid(c, m):
            raise ValueError(f"gpus[{i}]: {c.value}+{m.value} is not a valid pair on {spec.name}; allowed pairs: {spec.describe_valid_pairs()}")
