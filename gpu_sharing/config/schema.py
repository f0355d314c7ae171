"""The daemon config (``config/gpu-sharing.yaml``), version v1, strict.

Every model forbids unknown keys so a typo is an error naming the key, not a
silently ignored setting. Field docstrings become the JSON Schema descriptions
(``gpu-sharing schema``), which editors show while the YAML is typed.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpu_sharing.config.schedule import day_of_week_field, parse_timezone
from gpu_sharing.config.units import ByteSize
from gpu_sharing.hardware.catalog import CATALOG, get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Served model names: no leading '-' (cannot inject a vLLM flag), no '/' or '..' path parts."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class BackendKind(str, Enum):
    AUTO = "auto"
    SIMULATED = "simulated"
    AMDSMI = "amdsmi"
    AMD_SMI_CLI = "amd-smi-cli"


class LauncherKind(str, Enum):
    DIRECT = "direct"
    SYSTEMD_RUN = "systemd-run"


class KfdModeSwitch(str, Enum):
    STRICT = "strict"
    CGROUP_EXCLUSION = "cgroup_exclusion"


class MemoryPolicy(str, Enum):
    WARN = "warn"
    RESTART = "restart"
    STOP = "stop"


class OnExit(str, Enum):
    STOP = "stop"
    KEEP = "keep"


class MemoryFlag(str, Enum):
    UTILIZATION = "gpu-memory-utilization"
    KV_CACHE_BYTES = "kv-cache-memory-bytes"


class SimulatorSettings(Strict):
    gpu_model: str = "MI300X"
    """GPU model of the simulated node (MI300X, MI325X, MI350X, MI355X, MI300A)."""
    gpus: int = Field(8, ge=1, le=64)
    """Number of physical GPUs in the simulated node (one XGMI hive)."""
    startup_time_s: float = Field(1.0, ge=0, le=3600)
    """How long each fake vLLM takes to become healthy."""
    driver_reload_time_s: float = Field(2.0, ge=0, le=3600)
    """How long a simulated amdgpu reload takes."""

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        try:
            return get_spec(v).name
        except KeyError:
            raise ValueError(f"unknown GPU model {v!r}; allowed: {', '.join(CATALOG)}") from None


class NodeSettings(Strict):
    backend: BackendKind = BackendKind.AUTO
    """How to talk to the GPUs: amdsmi (Python library), amd-smi-cli, simulated, or auto
    (amdsmi, then the amd-smi CLI). --simulate forces simulated."""
    gpu_model: str | None = None
    """Expected GPU model; when set, mode pairs in `gpus` are checked against it at load time."""
    allow_driver_reload: bool = False
    """Allow memory (NPS) mode changes, which reload amdgpu and stop every GPU process on the hive."""
    driver_reload_timeout_s: float = Field(600.0, gt=0, le=7200)
    state_dir: str = "/var/lib/gpu-sharing"
    """Daemon state (instances, measured sizes). systemd's StateDirectory= sets it."""
    launcher: LauncherKind = LauncherKind.DIRECT
    """direct (own process group, NUMA CPU affinity) or systemd-run (transient unit per instance)."""
    kfd_mode_switch: KfdModeSwitch = KfdModeSwitch.STRICT
    """When this kernel refuses a compute-partition change as BUSY. strict (kernels without the May-2025
    KFD change "allow compute partition mode switch with cgroup exclusions"): any GPU process on the node
    blocks every change, so a compute-mode change drains the whole node. cgroup_exclusion (kernels with
    it): only processes whose device cgroup allows that GPU block it; with launcher: systemd-run (each
    instance's unit allows only its own render nodes) the other GPUs keep serving."""
    simulator: SimulatorSettings = SimulatorSettings()

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return get_spec(v).name
        except KeyError:
            raise ValueError(f"unknown GPU model {v!r}; allowed: {', '.join(CATALOG)}") from None


class GpuSettings(Strict):
    devices: Union[Literal["all"], list[int]] = "all"
    """Physical GPU indices this entry covers, or all."""
    compute_partition: Union[Literal["auto"], ComputePartitionMode] = "auto"
    """SPX, DPX, TPX, QPX, CPX, or auto (the planner chooses)."""
    memory_partition: Union[Literal["auto"], MemoryPartitionMode] = "auto"
    """NPS1, NPS2, NPS4, or auto (changes only if node.allow_driver_reload)."""

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("devices must list at least one GPU index, or be 'all'")
            if any(i < 0 or i > 63 for i in v):
                raise ValueError("GPU indices must be between 0 and 63")
            if len(set(v)) != len(v):
                raise ValueError("GPU indices must not repeat")
        return v


class LoraSettings(Strict):
    max_loras: int = Field(1, ge=1, le=256)
    max_lora_rank: int = Field(16, ge=1, le=512)
    modules: dict[str, str] = {}
    """name -> adapter path or HF id; served as extra model names."""


class SpeculativeSettings(Strict):
    model: str
    """Draft model (HF id or local path); its weights count toward the memory budget."""
    num_speculative_tokens: int = Field(5, ge=1, le=64)
    method: str | None = None
    config_json: dict[str, Any] | None = None
    """The draft model's config.json, inline, when it is not on local disk."""


class ComputeLimitsSettings(Strict):
    compute_share: float | None = Field(None, gt=0, le=1)
    """Share of the partition's CUs (0..1] given as a disjoint HSA_CU_MASK."""
    cu_count: int | None = Field(None, ge=1, le=1024)
    """Exact CU count instead of a share."""
    memory_bytes: ByteSize | None = None
    """VRAM cap per rank (bytes or '20GiB'); default: the sized total."""
    memory_policy: MemoryPolicy = MemoryPolicy.WARN
    """What to do when the instance uses more VRAM than its budget: warn, restart, stop."""
    memory_tolerance_fraction: float = Field(0.05, ge=0, le=1)
    cpu_cores: int | None = Field(None, ge=1, le=4096)
    """Number of host CPUs (taken from the GPU's NUMA node)."""
    numa_local: bool = True
    """Pin to the CPUs of the GPU's NUMA node."""
    host_memory_bytes: ByteSize | None = None
    """Host RAM cap (systemd-run MemoryMax=)."""
    user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    """Run the instance as this unprivileged user."""

    @model_validator(mode="after")
    def _one_of(self) -> "ComputeLimitsSettings":
        if self.compute_share is not None and self.cu_count is not None:
            raise ValueError("set compute_share or cu_count, not both")
        return self


class ScheduleWindow(Strict):
    days: str = "mon-sun"
    """Cron day-of-week field as APScheduler's CronTrigger reads it: mon-fri, sat,sun, */2, 0-4 (0 = Monday)."""
    start: str = Field("00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field("24:00", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    """Exclusive; before start means the window runs over midnight."""
    timezone: str | None = None
    """IANA timezone name (e.g. Europe/Berlin); default: the host's."""

    @field_validator("days")
    @classmethod
    def _cron_days(cls, v: str) -> str:
        day_of_week_field(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str | None) -> str | None:
        if v is not None:
            parse_timezone(v)
        return v


class ModelSettings(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    """Served model name clients send in `model`."""
    source: str = Field(min_length=1, max_length=4096)
    """Hugging Face id (org/name) or local directory with config.json and weights."""
    aliases: list[str] = []
    """More served names for the same instance."""
    replicas: int = Field(1, ge=0, le=1024)
    priority: int = Field(0, ge=0, le=1_000_000)
    """Higher wins when not everything fits."""
    enabled: bool = True
    config_json: Union[dict[str, Any], str, None] = None
    """The model's config.json inline, or a path to it; default: from source / HF cache."""
    revision: str | None = None
    max_model_len: int | None = Field(None, ge=16, le=10_000_000)
    max_num_seqs: int = Field(16, ge=1, le=65536)
    """Concurrent sequences the KV cache is sized for (max_model_len x max_num_seqs tokens)."""
    max_num_batched_tokens: int | None = Field(None, ge=16, le=10_000_000)
    dtype: Literal["auto", "bfloat16", "float16", "half", "float32", "float"] = "auto"
    quantization: str | None = Field(None, pattern=r"^[a-z0-9_-]{1,40}$")
    kv_cache_dtype: Literal["auto", "bfloat16", "fp8", "fp8_e4m3"] = "auto"
    kv_cache_bytes: ByteSize | None = None
    """Fixed KV pool per rank (vLLM --kv-cache-memory-bytes) instead of context x sequences."""
    tensor_parallel_size: int | None = None
    """1, 2, 4 or 8; default: the planner chooses the smallest that fits."""
    enforce_eager: bool = False
    trust_remote_code: bool = False
    lora: LoraSettings | None = None
    speculative: SpeculativeSettings | None = None
    limits: ComputeLimitsSettings = ComputeLimitsSettings()
    schedule: ScheduleWindow | None = None
    """Serve only inside this window; outside it the room goes to others."""
    gpus: list[int] | None = None
    """Restrict placement to these physical GPUs."""
    vllm_args: dict[str, Union[str, int, float, bool, list[Union[str, int, float]], None]] = {}
    """Extra `vllm serve` flags (without --), merged over the defaults in vllm.vllm_args."""
    env: dict[str, str] = {}

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for a in v:
            if not re.match(NAME_PATTERN, a):
                raise ValueError(f"alias {a!r} must match {NAME_PATTERN}")
        return v

    @field_validator("tensor_parallel_size")
    @classmethod
    def _tp(cls, v: int | None) -> int | None:
        if v is not None and v not in (1, 2, 4, 8):
            raise ValueError(f"tensor_parallel_size must be 1, 2, 4 or 8, got {v}")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("-"):
            raise ValueError("source must not start with '-' (it would be read as a vLLM flag)")
        return v

    @field_validator("vllm_args")
    @classmethod
    def _args(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not re.match(r"^[a-z0-9][a-z0-9-]*$", k):
                raise ValueError(f"vllm_args key {k!r} must be a flag name like 'block-size' (no leading --)")
        return v

    @property
    def served_names(self) -> list[str]:
        return [self.name, *self.aliases]


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
    vllm_args: dict[str, Union[str, int, float, bool, list[Union[str, int, float]], None]] = {}
    env: dict[str, str] = {}
    stage_weights: bool = False
    """Download (huggingface_hub) and verify weights before starting an instance (state STAGING);
    off: vLLM fetches them itself at start."""
    staging_budget_bytes: ByteSize | None = None
    """Disk budget for staged weights; default: the free space of the cache's disk."""
    log_dir: str | None = None
    """Per-instance logs; default: <state_dir>/logs."""
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
    vram_check_interval_s: float = Field(15.0, gt=0)


class PlannerSettings(Strict):
    headroom_fraction: float = Field(0.03, ge=0, lt=0.5)
    """Share of each partition left free (fragmentation, HIP context of neighbours)."""
    spread_replicas: bool = True


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
