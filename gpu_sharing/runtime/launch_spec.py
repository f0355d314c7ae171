"""From a placement to the exact ``vllm serve`` argv and environment.

Why the care: a flag vLLM 0.33 does not know makes the instance exit at start,
and a wrong visibility variable puts it on another tenant's partition. Every
extra flag is encoded by gpu_sharing/config/vllm_flags.py from the metadata generated
from vLLM 0.33.0's own parser; the device is chosen with HIP_VISIBLE_DEVICES only
(vLLM on ROCm rejects a CUDA_VISIBLE_DEVICES that differs). The sizing numbers
(--max-model-len, --max-num-seqs, --max-num-batched-tokens, the memory flags) come
from the instance's LaunchContract (launch_contract.py), the same object the plan's
memory figure comes from.
Merging: defaults (vllm.vllm_args/env) < model (models[i].vllm_args/env) < ours.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.config.vllm_flags import all_flag_names, check_vllm_args, encode
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_contract import contract_argv, launch_contract
from gpu_sharing.sizing.contract import LaunchContract, utilization_for
from gpu_sharing.sizing.types import ModelSize

__all__ = ["LaunchSpec", "build_launch_spec", "launch_contract", "utilization_for", "vllm_flags"]

MANAGED_ENV = frozenset({"HIP_VISIBLE_DEVICES", "HSA_CU_MASK"})


@lru_cache(maxsize=1)
def vllm_flags() -> frozenset[str]:
    """Every `vllm serve` flag name of vLLM 0.33.0 (gpu_sharing/data/vllm_serve_flags.json)."""
    return all_flag_names()


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
    contract: LaunchContract | None = None
    """The numbers this argv passes (context, sequences, batched tokens, budget split)."""

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"argv": self.argv, "env": dict(sorted(self.env.items()))}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_launch_spec(*, instance_id: str, model: ModelSettings, vllm: VllmSettings,
                      partitions: Sequence[LogicalPartition], tp: int, port: int, memory_bytes_per_rank: int,
                      size: ModelSize | None = None, cu_mask: str | None = None,
                      served_names: Sequence[str] | None = None, extra_env: Mapping[str, str] | None = None,
                      contract: LaunchContract | None = None, config_dir: Path | None = None) -> LaunchSpec:
    """The argv/env of one instance. Its sizing numbers come from ``contract`` (or, when not given, from
    ``launch_contract(model, tp, memory_bytes_per_rank, size=size, config_dir=config_dir)``), so what vLLM
    is told is exactly what the plan sized."""
    if len(partitions) != tp:
        raise UserError(f"{instance_id}: tp={tp} needs {tp} partitions, got {len(partitions)}")
    if contract is None:
        contract = launch_contract(model, tp=tp, budget_bytes=memory_bytes_per_rank, size=size, config_dir=config_dir)
    names = tuple(served_names or model.served_names)
    argv: list[str] = [*vllm.command, model.source, "--host", vllm.host, "--port", str(port),
                       "--served-model-name", *names]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    argv += contract_argv(contract, model, vllm, partitions)
    if model.dtype != "auto":
        argv += ["--dtype", model.dtype]
    if model.quantization:
        argv += ["--quantization", model.quantization]
    if model.revision:
        argv += ["--revision", model.revision]
    if model.trust_remote_code:
        argv.append("--trust-remote-code")
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
        where = f"models[{model.name}].vllm_args" if key in model.vllm_args else "vllm.vllm_args"
        try:
            check_vllm_args({key: merged[key]}, where)
            argv += encode(key, merged[key], f"{where}.{key}")
        except ValueError as e:
            raise UserError(str(e)) from None
    env, warnings = _env(model, vllm, partitions, cu_mask, extra_env)
    return LaunchSpec(instance_id, tuple(argv), env, port, vllm.host, names, env["HIP_VISIBLE_DEVICES"],
                      tuple(warnings), contract)


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
