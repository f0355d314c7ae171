"""The launch contract of one placed instance, and the vLLM flags that carry it.

Why here: the plan sizes each instance (gpu_sharing/sizing/contract.py); at launch the
contract is re-fitted to the placement's budget (an auto context grows to what the budget
holds) and printed as flags, so vLLM 0.33 is told every number the plan assumed:
- --max-model-len, --max-num-seqs, --max-num-batched-tokens always (vLLM's defaults depend
  on the device: vllm/engine/arg_utils.py:2940-3006, and the model's full context);
- --kv-cache-dtype when not auto;
- --gpu-memory-utilization = the budget as a fraction of the partition, ALWAYS: vLLM checks
  free memory >= ceil(total x gpu_memory_utilization) at every start, even with
  --kv-cache-memory-bytes (vllm/v1/worker/gpu_worker.py:542 -> utils.py:716 request_memory),
  so without it the default 0.92 refuses the second instance on a shared partition;
- --kv-cache-memory-bytes = the sized KV pool, with ``vllm.memory_flag: kv-cache-memory-bytes``
  or the model's ``kv_cache_bytes`` (gpu_worker.py:656: then the pool is exactly that).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from gpu_sharing.config.schema import MemoryFlag, ModelSettings, VllmSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.sizing import size_model
from gpu_sharing.sizing.contract import LaunchContract, MemoryBudget, default_batched_tokens
from gpu_sharing.sizing.resolve import block_size_of
from gpu_sharing.sizing.types import ModelSize


def launch_contract(model: ModelSettings, *, tp: int, budget_bytes: int, size: ModelSize | None = None,
                    config_dir: Path | None = None) -> LaunchContract:
    """The contract for ``model`` placed with ``budget_bytes`` per rank at tensor parallel ``tp``.

    ``size`` is the planner's size when the caller has it; otherwise the model is sized again from its
    config.json (pure apart from reading that file). Without any config.json (a catalog-only model)
    the contract still passes the configured numbers; an unset context is then ``auto`` (vLLM fits it).
    """
    base = size.contract if size is not None else None
    if base is None:
        try:
            base = size_model(model, tp=tp, config_dir=config_dir).contract
        except UserError:
            base = None
    if base is not None:
        return base.fitted_to(budget_bytes)
    seqs = model.max_num_seqs
    kv = model.kv_cache_bytes
    return LaunchContract(
        tp=tp, max_model_len=model.max_model_len, max_model_len_auto=model.max_model_len is None,
        max_position_embeddings=None, max_num_seqs=seqs,
        max_num_batched_tokens=model.max_num_batched_tokens or default_batched_tokens(seqs),
        kv_cache_dtype=model.kv_cache_dtype, block_size=block_size_of(model), enforce_eager=model.enforce_eager,
        budget=MemoryBudget(weights_bytes=0, kv_bytes=kv or 0, activation_bytes=0, graph_bytes=0, runtime_bytes=0,
                            extras_bytes=max(0, budget_bytes - (kv or 0))),
        fixed_kv_bytes=kv)


def contract_argv(contract: LaunchContract, model: ModelSettings, vllm: VllmSettings,
                  partitions: Sequence[LogicalPartition]) -> list[str]:
    """The flags that carry the contract (see the module docstring for why each one is always passed)."""
    argv = ["--max-model-len", str(contract.max_model_len) if contract.max_model_len else "auto",
            "--max-num-seqs", str(contract.max_num_seqs),
            "--max-num-batched-tokens", str(contract.max_num_batched_tokens)]
    if contract.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", contract.kv_cache_dtype]
    if contract.enforce_eager:
        argv.append("--enforce-eager")
    total = min(p.vram_total_bytes for p in partitions)
    if total <= 0:
        raise UserError("partition reports no VRAM")
    argv += ["--gpu-memory-utilization", f"{contract.memory_fraction(total):.4f}"]
    kv = kv_pool_bytes(contract, vllm)
    if kv is not None:
        argv += ["--kv-cache-memory-bytes", str(kv)]
    return argv


def kv_pool_bytes(contract: LaunchContract, vllm: VllmSettings) -> int | None:
    """Bytes for --kv-cache-memory-bytes, or None when vLLM should size the pool from the utilization."""
    if contract.fixed_kv_bytes is not None:
        return int(contract.fixed_kv_bytes)
    if vllm.memory_flag == MemoryFlag.KV_CACHE_BYTES and contract.budget.kv_bytes > 0 and contract.layout is not None:
        return int(contract.budget.kv_bytes)
    return None


def with_budget(contract: LaunchContract, budget_bytes: int) -> LaunchContract:
    """Alias kept for callers that hold a contract and a new placement budget."""
    return replace(contract).fitted_to(budget_bytes)
