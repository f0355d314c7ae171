"""From a placement to the exact ``vllm serve`` argv and environment.

Why the care: a flag vLLM 0.33 does not know makes the instance exit at start,
and a wrong visibility variable puts it on another tenant's partition. Every
flag we emit is checked against the 0.33.0 flag list shipped as package data
(gpu_sharing/data/vllm-0.33.0-serve-flags.txt); the device is chosen with
HIP_VISIBLE_DEVICES only (vLLM on ROCm rejects a CUDA_VISIBLE_DEVICES that differs).
Memory: ``--gpu-memory-utilization`` is a fraction of the partition's TOTAL
memory and vLLM requests ceil(total x util), so we round the budget's fraction up
to 4 decimals (never below the budget, never above 1); or, with
``vllm.memory_flag: kv-cache-memory-bytes``, a fixed KV pool.
Merging: defaults (vllm.vllm_args/env) < model (models[i].vllm_args/env) < ours.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

from gpu_sharing.config.schema import MemoryFlag, ModelSettings, VllmSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.sizing.types import ModelSize

MANAGED_FLAGS = frozenset({
    "host", "port", "served-model-name", "tensor-parallel-size", "max-model-len", "max-num-seqs",
    "gpu-memory-utilization", "kv-cache-memory-bytes", "dtype", "quantization", "kv-cache-dtype",
    "max-num-batched-tokens", "enforce-eager", "revision", "trust-remote-code", "enable-lora", "max-loras",
    "max-lora-rank", "lora-modules", "speculative-config",
})
"""Flags that come from the model's own keys; setting them in vllm_args would duplicate or contradict them."""
MANAGED_ENV = frozenset({"HIP_VISIBLE_DEVICES", "HSA_CU_MASK"})


@lru_cache(maxsize=1)
def vllm_flags() -> frozenset[str]:
    text = resources.files("gpu_sharing.data").joinpath("vllm-0.33.0-serve-flags.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip().startswith("-"))


@dataclass(frozen=True)
class LaunchSpec:
    instance_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int
    host: str
    served_names: tuple[str, ...]
    hip_visible_devices: str
    warnings: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"argv": self.argv, "env": dict(sorted(self.env.items()))}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def utilization_for(budget_bytes: int, partition_total_bytes: int) -> float:
    """Smallest 4-decimal fraction f with ceil(total x f) >= budget, capped at 1."""
    if partition_total_bytes <= 0:
        raise UserError("partition reports no VRAM")
    f = math.ceil(budget_bytes / partition_total_bytes * 10_000) / 10_000
    return min(1.0, max(0.0001, f))


def _flag_args(key: str, value: Any, where: str) -> list[str]:
    flag = f"--{key}"
    if flag not in vllm_flags():
        raise UserError(f"{where}.{key}: --{key} is not a vLLM 0.33.0 `vllm serve` flag")
    if key in MANAGED_FLAGS:
        raise UserError(f"{where}.{key}: --{key} is set by gpu-sharing from the placement and model settings; "
                        f"use the model's own key instead")
    if value is True:
        return [flag]
    if value is False:
        neg = f"--no-{key}"
        return [neg] if neg in vllm_flags() else []
    if isinstance(value, list):
        return [flag, *[str(v) for v in value]]
    if isinstance(value, (dict,)):
        return [flag, json.dumps(value, sort_keys=True)]
    return [flag, str(value)]


def build_launch_spec(*, instance_id: str, model: ModelSettings, vllm: VllmSettings,
                      partitions: Sequence[LogicalPartition], tp: int, port: int, memory_bytes_per_rank: int,
                      size: ModelSize | None = None, cu_mask: str | None = None,
                      served_names: Sequence[str] | None = None, extra_env: Mapping[str, str] | None = None) -> LaunchSpec:
    if len(partitions) != tp:
        raise UserError(f"{instance_id}: tp={tp} needs {tp} partitions, got {len(partitions)}")
    names = tuple(served_names or model.served_names)
    argv: list[str] = [*vllm.command, model.source, "--host", vllm.host, "--port", str(port),
                       "--served-model-name", *names]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    if model.max_model_len:
        argv += ["--max-model-len", str(model.max_model_len)]
    argv += ["--max-num-seqs", str(model.max_num_seqs)]
    if model.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(model.max_num_batched_tokens)]
    if model.dtype != "auto":
        argv += ["--dtype", model.dtype]
    if model.quantization:
        argv += ["--quantization", model.quantization]
    if model.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", model.kv_cache_dtype]
    if model.enforce_eager:
        argv.append("--enforce-eager")
    if model.revision:
        argv += ["--revision", model.revision]
    if model.trust_remote_code:
        argv.append("--trust-remote-code")
    argv += _memory_flags(model, vllm, partitions, memory_bytes_per_rank, size)
    if model.lora is not None:
        argv += ["--enable-lora", "--max-loras", str(model.lora.max_loras), "--max-lora-rank", str(model.lora.max_lora_rank)]
        if model.lora.modules:
            argv += ["--lora-modules", *[f"{k}={v}" for k, v in sorted(model.lora.modules.items())]]
    if model.speculative is not None:
        spec = {"model": model.speculative.model, "num_speculative_tokens": model.speculative.num_speculative_tokens}
        if model.speculative.method:
            spec["method"] = model.speculative.method
        argv += ["--speculative-config", json.dumps(spec, sort_keys=True)]
    merged = {**vllm.vllm_args, **model.vllm_args}
    for key in sorted(merged):
        if merged[key] is None:
            continue
        where = f"models[{model.name}].vllm_args" if key in model.vllm_args else "vllm.vllm_args"
        argv += _flag_args(key, merged[key], where)
    env, warnings = _env(model, vllm, partitions, cu_mask, extra_env)
    return LaunchSpec(instance_id, tuple(argv), env, port, vllm.host, names, env["HIP_VISIBLE_DEVICES"], tuple(warnings))


def _memory_flags(model, vllm, partitions, budget: int, size: ModelSize | None) -> list[str]:
    if vllm.memory_flag == MemoryFlag.KV_CACHE_BYTES or model.kv_cache_bytes is not None:
        kv = model.kv_cache_bytes if model.kv_cache_bytes is not None else (size.kv_bytes if size else None)
        if kv is not None:
            return ["--kv-cache-memory-bytes", str(int(kv))]
    total = min(p.vram_total_bytes for p in partitions)
    return ["--gpu-memory-utilization", f"{utilization_for(budget, total):.4f}"]


def _env(model, vllm, partitions, cu_mask, extra_env) -> tuple[dict[str, str], list[str]]:
    env = {**vllm.env, **model.env, **(extra_env or {})}
    warnings = []
    for key in MANAGED_ENV:
        if key in vllm.env or key in model.env:
            warnings.append(f"{key} from the config is replaced by the placement's value")
            env.pop(key, None)
    hip = ",".join(str(p.hip_index) for p in partitions)
    env["HIP_VISIBLE_DEVICES"] = hip
    if "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"] != hip:
        warnings.append("CUDA_VISIBLE_DEVICES differs from the placement; dropped (vLLM on ROCm rejects the mismatch)")
        env.pop("CUDA_VISIBLE_DEVICES")
    if cu_mask:
        env["HSA_CU_MASK"] = cu_mask
    return env, warnings
