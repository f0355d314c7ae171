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
from gpu_sharing.config.vllm_flags import check_vllm_args, choices_of, rocm_quantizations
from gpu_sharing.hardware.catalog import CATALOG, get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Served model names: no leading '-' (cannot inject a vLLM flag), no '/' or '..' path parts."""


def known_gpu_model(name: str) -> str:
    """The catalog's name for a GPU model, or a ValueError listing the known ones."""
    try:
        return get_spec(name).name
    except KeyError:
        raise ValueError(f"unknown GPU model {name!r}; allowed: {', '.join(CATALOG)}") from None


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
    """The fake vLLM's fixed engine start (before it is healthy), besides loading weights and graphs."""
    disk_bandwidth_bytes_per_s: float = Field(0, ge=0, le=1e12)
    """Weights load at this rate in the fake vLLM (0: instantly). A real cold start reads every byte."""
    graph_capture_s: float = Field(0, ge=0, le=3600)
    """Graph capture time of the fake vLLM, skipped with --enforce-eager (0: none)."""
    driver_reload_time_s: float = Field(2.0, ge=0, le=3600)
    """How long a simulated amdgpu reload takes."""

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return known_gpu_model(v)


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
        return v if v is None else known_gpu_model(v)


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
    max_lora_rank: int = 16
    """One of vLLM 0.33's --max-lora-rank choices: 1, 8, 16, 32, 64, 128, 256, 320, 512."""
    modules: dict[str, str] = {}
    """name -> adapter path or HF id; served as extra model names (`--lora-modules name=path`)."""

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, v: int) -> int:
        allowed = choices_of("--max-lora-rank") or ()
        if v not in allowed:
            raise ValueError(f"max_lora_rank {v} is not accepted by vLLM 0.33 --max-lora-rank; "
                             f"allowed: {', '.join(map(str, allowed))}")
        return v

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"LoRA module name {name!r} must match {NAME_PATTERN} "
                                 "(no leading '-', no '=' or spaces: it is passed as --lora-modules name=path)")
            if not path or path.startswith("-") or any(c in path for c in "\x00\n"):
                raise ValueError(f"LoRA module {name!r}: path {path!r} must be a path or HF id, not start with '-'")
        return v


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


class ScalingSettings(Strict):
    """Demand-driven replicas: between min and max, by the router's queue; idle models unload.

    Without ``scaling`` a model keeps ``replicas`` resident (min = max = replicas). With it,
    ``replicas`` is not used: the model starts at ``min_replicas``, and one with ``min_replicas: 0``
    loads on its first request (held by the router until a replica is READY).
    """

    min_replicas: int = Field(0, ge=0, le=1024)
    max_replicas: int = Field(1, ge=1, le=1024)
    idle_unload_s: float | None = Field(600.0, gt=0, le=30 * 86400)
    """Stop replicas above min_replicas after this long without a request (null: never)."""
    target_queue_per_replica: float = Field(4.0, gt=0, le=1e6)
    """Outstanding requests (in flight + held) per replica above which a replica is added."""
    scale_up_after_s: float = Field(10.0, ge=0, le=86400)
    """How long the load must stay above target before a replica is added."""
    scale_down_after_s: float = Field(120.0, ge=0, le=86400)
    """How long the load must stay below half the target for one replica fewer before one is removed."""
    queue_limit: int = Field(64, ge=0, le=100_000)
    """Requests the router holds for this model while no replica is READY; beyond: 503 with Retry-After."""
    queue_timeout_s: float = Field(300.0, gt=0, le=3600)
    """The longest a request is held waiting for a replica; then 503 with Retry-After."""

    @model_validator(mode="after")
    def _bounds(self) -> "ScalingSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


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
    """Context length passed as --max-model-len. Unset: sized for min(model maximum, 8192), and the launch
    passes the longest context the placement holds (shown by `plan` and `size`)."""
    max_num_seqs: int = Field(16, ge=1, le=65536)
    """Concurrent sequences the KV cache is sized for (max_model_len x max_num_seqs tokens)."""
    max_num_batched_tokens: int | None = Field(None, ge=16, le=10_000_000)
    """Passed as --max-num-batched-tokens (the activation peak grows with it). Unset: max(2048, max_num_seqs),
    passed explicitly so vLLM's device-dependent default (16384 on a 192 GB GPU) does not apply."""
    dtype: Literal["auto", "bfloat16", "float16", "half", "float32", "float"] = "auto"
    quantization: str | None = Field(None, pattern=r"^[a-z0-9_-]{1,40}$")
    """A method ROCm vLLM 0.33 runs (vllm/platforms/rocm.py RocmPlatform.supported_quantization), or unset
    to use the checkpoint's quantization_config."""
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
    scaling: ScalingSettings | None = None
    """Demand-driven replicas (load on first request, unload when idle, scale with the queue)."""
    """Serve only inside this window; outside it the room goes to others."""
    gpus: list[int] | None = None
    """Restrict placement to these physical GPUs."""
    vllm_args: dict[str, Union[str, int, float, bool, list[Union[str, int, float]], dict[str, Any], None]] = {}
    """Extra `vllm serve` flags (without --), merged over the defaults in vllm.vllm_args. Checked against
    vLLM 0.33's parser: `x: false` gives --no-x or --disable-x, lists repeat or extend the flag as vLLM
    expects, JSON-typed flags take a list or mapping."""
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
        return _check_args(v)

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, v: str | None) -> str | None:
        if v is not None and v not in rocm_quantizations():
            raise ValueError(f"quantization {v!r} is not run by vLLM 0.33 on ROCm; allowed: "
                             f"{', '.join(rocm_quantizations())}")
        return v

    @model_validator(mode="after")
    def _lora_names(self) -> "ModelSettings":
        if self.lora is not None:
            for n in self.lora.modules:
                if n in self.served_names:
                    raise ValueError(f"lora.modules: adapter name {n!r} is also a served name of this model")
        return self

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
    """gpu-memory-utilization: the sized budget as a fraction of the partition. kv-cache-memory-bytes: the
    sized KV pool passed as bytes, plus the budget's fraction (vLLM 0.33 still checks free memory against
    gpu_memory_utilization at start-up, vllm/v1/worker/utils.py:716 request_memory)."""
    vllm_args: dict[str, Union[str, int, float, bool, list[Union[str, int, float]], dict[str, Any], None]] = {}
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

    @field_validator("vllm_args")
    @classmethod
    def _args(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_args(v)

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


def _check_args(v: dict[str, Any]) -> dict[str, Any]:
    for k in v:
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", k):
            raise ValueError(f"vllm_args key {k!r} must be a flag name like 'block-size' (no leading --)")
    check_vllm_args(v, "vllm_args")
    return v


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
