"""The ``models`` section of the daemon config: one entry per served model, with its LoRA adapters, draft model,
compute and memory limits, schedule window and demand-driven scaling.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from gpu_sharing.config.schedule import day_of_week_field, parse_timezone
from gpu_sharing.config.strict import NAME_PATTERN, Strict
from gpu_sharing.config.units import ByteSize
from gpu_sharing.config.vllm_flags import check_vllm_args, choices_of, rocm_quantizations


def check_args(v: dict[str, Any]) -> dict[str, Any]:
    """``vllm_args`` (of a model or of ``vllm``): flag names without ``--``, values vLLM 0.33's parser accepts."""
    for k in v:
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", k):
            raise ValueError(f"vllm_args key {k!r} must be a flag name like 'block-size' (no leading --)")
    check_vllm_args(v, "vllm_args")
    return v


VllmArgs = Annotated[dict[str, Union[str, int, float, bool, list[Union[str, int, float]], dict[str, Any], None]],
                     AfterValidator(check_args)]
"""``vllm_args`` of a model or of ``vllm``: flag name (without --) -> value, checked by ``check_args``."""


class MemoryPolicy(str, Enum):
    WARN = "warn"
    RESTART = "restart"
    STOP = "stop"


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
    """Serve only inside this window; outside it the room goes to others."""
    scaling: ScalingSettings | None = None
    """Demand-driven replicas (load on first request, unload when idle, scale with the queue)."""
    gpus: list[int] | None = None
    """Restrict placement to these physical GPUs."""
    vllm_args: VllmArgs = {}
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
