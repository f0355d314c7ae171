"""From config.json + serving options to bytes per tensor-parallel rank (pure).

weights: every checkpoint tensor (architectures.py) x bytes of its dtype or
quantization format; per rank, linears, experts, embeddings and lm_head are
split over tp (vLLM's column/row/vocab-parallel layers), norms, biases and
routers are replicated.
KV: kv_cache.py, for max_model_len x max_num_seqs tokens (or a fixed pool).
Overheads: overheads.py (activation peak, graphs, non-torch runtime; fitted to published
vLLM memory profiles). Every number assumed is kept in the LaunchContract (contract.py) that
the launch passes to vLLM. Measured sizes (measured_store.py) replace the total once an
instance has run.
"""

from __future__ import annotations

import math
from typing import Any

from gpu_sharing.errors import UserError
from gpu_sharing.sizing.architectures import Accounting, account
from gpu_sharing.sizing.contract import DEFAULT_CONTEXT_CAP, LaunchContract, MemoryBudget, default_batched_tokens
from gpu_sharing.sizing.kv_cache import KV_DTYPE_BYTES, kv_layout
from gpu_sharing.sizing.overheads import estimate_overheads, model_shape
from gpu_sharing.sizing.rocm_padding import mxfp4_pad_align, padded_expert_rank_bytes
from gpu_sharing.sizing.types import ModelSize, SizeSource

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
QUANTIZED_KINDS = ("linear", "expert")
SPLIT_KINDS = ("linear", "expert", "embed", "lm_head")
KNOWN_QUANT = ("fp8", "awq", "gptq", "mxfp4", "bitsandbytes", "compressed-tensors")


def _dtype_bytes(dtype: str, config: dict[str, Any]) -> tuple[int, int]:
    """(bytes per value in the checkpoint, bytes per value as vLLM loads it).

    Under --dtype auto vLLM 0.33 loads a float32 or dtype-less checkpoint in bfloat16
    (vllm/config/model.py _get_and_verify_dtype: float32 -> the platform's preferred half type),
    so only the checkpoint figure stays 4 bytes."""
    stored = config.get("torch_dtype") or config.get("dtype")
    if stored is not None and stored not in DTYPE_BYTES:
        raise UserError(f"config.json: torch_dtype {stored!r} is not one of {', '.join(DTYPE_BYTES)}")
    if dtype != "auto":
        if dtype not in DTYPE_BYTES:
            raise UserError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPE_BYTES)}")
        return DTYPE_BYTES[stored or "float32"], DTYPE_BYTES[dtype]
    ckpt = DTYPE_BYTES[stored or "float32"]  # transformers' default for the stored checkpoint
    return ckpt, min(ckpt, 2)


def quantization_method(config: dict[str, Any], override: str | None) -> tuple[str | None, dict[str, Any]]:
    qc = config.get("quantization_config") or {}
    method = override or qc.get("quant_method")
    if method is None:
        return None, {}
    method = str(method).lower()
    if method == "bnb" or method.startswith("bitsandbytes"):
        method = "bitsandbytes"
    if method in ("fp8", "ptpc_fp8", "fbgemm_fp8"):
        method = "fp8"
    if method not in KNOWN_QUANT:
        raise UserError(f"unknown quantization method {method!r} (config.json quantization_config.quant_method "
                        f"or the model's `quantization:`); known: {', '.join(KNOWN_QUANT)}")
    return method, qc


def _tensor_bytes(kind: str, rows: int, cols: int, base: int, method: str | None, qc: dict[str, Any]) -> int:
    n = rows * cols
    if method is None or kind not in QUANTIZED_KINDS:
        return n * base
    if method == "compressed-tensors":
        return _compressed_tensors_bytes(rows, cols, qc)
    if method == "fp8":
        return n + 4  # 1 byte per weight + one fp32 per-tensor scale
    if method in ("awq", "gptq"):
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = int(qc.get("group_size", qc.get("q_group_size", 128)))
        group = cols if group in (-1, 0) else group
        groups = math.ceil(cols / group)
        packed = n * bits // 8
        scales = groups * rows * 2
        zeros = groups * math.ceil(rows * bits / 32) * 4
        g_idx = cols * 4 if method == "gptq" else 0
        return packed + scales + zeros + g_idx
    if method == "mxfp4":
        if kind != "expert":
            return n * base
        return n // 2 + n // 32  # two fp4 values per byte + one e8m0 scale per 32 values
    if method == "bitsandbytes":
        block = int(qc.get("bnb_4bit_blocksize", 64))
        return n // 2 + math.ceil(n / block) * 4 + 16 * 4  # packed nf4 + fp32 absmax + quant_map
    return n * base


def _compressed_tensors_bytes(rows: int, cols: int, qc: dict[str, Any]) -> int:
    """compressed-tensors: the first config group's weight scheme. 4-bit pack-quantized stores two
    values per byte plus one bf16 scale per group (and zero points when asymmetric); nvfp4 stores fp8
    scales per 16 values; 8-bit (int8/fp8) one byte per value plus per-channel scales."""
    groups_cfg = qc.get("config_groups") or {}
    scheme = next(iter(groups_cfg.values()), {}) if isinstance(groups_cfg, dict) else {}
    w = (scheme.get("weights") or {}) if isinstance(scheme, dict) else {}
    bits = int(w.get("num_bits") or 8)
    n = rows * cols
    strategy = str(w.get("strategy") or "tensor")
    group = int(w.get("group_size") or 0) if strategy in ("group", "tensor_group") else 0
    fmt = str(qc.get("format") or "")
    scale_bytes = 1 if "nvfp4" in fmt or (w.get("type") == "float" and bits == 4) else 2
    if group:
        scales = math.ceil(cols / group) * rows * scale_bytes
    elif strategy == "channel":
        scales = rows * scale_bytes
    else:
        scales = 4
    zeros = 0 if w.get("symmetric", True) else math.ceil(scales / scale_bytes * bits / 8)
    return math.ceil(n * bits / 8) + scales + zeros


def weights_bytes(acc: Accounting, base: int, method: str | None, qc: dict[str, Any], tp: int, *,
                  expert_dims: tuple[int, int] | None = None, mxfp4_align: int | None = None) -> tuple[int, int]:
    """(all ranks, per rank). With ``mxfp4_align`` and ``expert_dims`` (hidden, expert intermediate), MXFP4
    expert tensors are counted per rank as ROCm's vLLM allocates them, padded (rocm_padding.py)."""
    total = per_rank = 0
    skip = set(qc.get("modules_to_not_convert") or qc.get("ignored_layers") or qc.get("ignore") or [])
    for t in acc.tensors:
        m = None if any(s and s in t.name for s in skip) else method
        b = _tensor_bytes(t.kind, t.rows, t.cols, base, m, qc) * t.count
        total += b
        if m == "mxfp4" and t.kind == "expert" and mxfp4_align and expert_dims and expert_dims[1]:
            per_rank += padded_expert_rank_bytes(t.name, t.rows, t.cols, t.count, hidden=expert_dims[0],
                                                 intermediate=expert_dims[1], tp=tp, align=mxfp4_align)
        else:
            per_rank += math.ceil(b / tp) if t.kind in SPLIT_KINDS else b
    return total, per_rank


def size_from_config_json(config: dict[str, Any], *, tp: int = 1, max_model_len: int | None = None,
                          max_num_seqs: int = 16, max_num_batched_tokens: int | None = None, dtype: str = "auto",
                          quantization: str | None = None, kv_cache_dtype: str = "auto",
                          kv_cache_bytes: int | None = None, enforce_eager: bool = False, block_size: int = 16,
                          source: SizeSource = SizeSource.CONFIG_JSON, config_name: str = "config.json",
                          gfx_target: str | None = None) -> ModelSize:
    """``gfx_target`` picks ROCm's MXFP4 expert padding (gfx950: 256, others 128; None: 256, the larger)."""
    if tp < 1:
        raise UserError(f"tensor parallel size must be >= 1, got {tp}")
    acc = account(config, config_name)
    warnings: list[str] = []
    if acc.generic:
        source = SizeSource.ESTIMATE_GENERIC
        warnings.append(f"model_type {config.get('model_type')!r} is not a known architecture: estimated with the "
                        "llama rule (source estimate-generic); add it to the sizing catalog for an exact size")
    ckpt_bytes, load_bytes = _dtype_bytes(dtype, config)
    method, qc = quantization_method(config, quantization)
    shape = model_shape(config)
    w_total, _ = weights_bytes(acc, ckpt_bytes, method, qc, tp)
    _, w_rank = weights_bytes(acc, load_bytes, method, qc, tp, expert_dims=(shape.hidden, shape.moe_intermediate),
                              mxfp4_align=mxfp4_pad_align(gfx_target))
    if kv_cache_dtype not in KV_DTYPE_BYTES:
        raise UserError(f"kv_cache_dtype {kv_cache_dtype!r} is not one of {', '.join(KV_DTYPE_BYTES)}")
    kv_dtype_bytes = KV_DTYPE_BYTES[kv_cache_dtype] or load_bytes
    layout = kv_layout(config, tp=tp, dtype_bytes=kv_dtype_bytes, source=config_name)
    max_pos = config.get("max_position_embeddings") or config.get("n_positions")
    max_pos = int(max_pos) if max_pos else None
    auto = max_model_len is None
    if auto:
        max_model_len = min(max_pos or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
        if kv_cache_bytes is not None and layout.bytes_per_token:
            fits = kv_cache_bytes // (layout.bytes_per_token * max(1, max_num_seqs)) // block_size * block_size
            max_model_len = max(block_size, min(max_model_len, fits))
        warnings.append(f"max_model_len not set: sized for {max_model_len} tokens; the launch fits the longest "
                        "context the placement holds and passes it as --max-model-len")
    elif max_pos and max_model_len > max_pos:
        warnings.append(f"max_model_len {max_model_len} exceeds the model's max_position_embeddings {max_pos}")
    tokens = max_model_len * max_num_seqs
    kv = kv_cache_bytes if kv_cache_bytes is not None else layout.bytes_for(max_model_len, max_num_seqs, block_size)
    batched = max_num_batched_tokens or default_batched_tokens(max_num_seqs)
    over = estimate_overheads(shape, tp=tp, batched_tokens=batched, max_num_seqs=max_num_seqs,
                              act_dtype_bytes=load_bytes, enforce_eager=enforce_eager, weights_bytes_per_rank=w_rank)
    budget = MemoryBudget(weights_bytes=w_rank, kv_bytes=kv, activation_bytes=over.activation_bytes,
                          graph_bytes=over.graph_bytes, runtime_bytes=over.runtime_bytes + over.context_bytes,
                          context_bytes=over.context_bytes)
    contract = LaunchContract(tp=tp, max_model_len=max_model_len, max_model_len_auto=auto,
                              max_position_embeddings=max_pos, max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=batched, kv_cache_dtype=kv_cache_dtype, block_size=block_size,
                              enforce_eager=enforce_eager, budget=budget, fixed_kv_bytes=kv_cache_bytes, layout=layout)
    notes = (f"activations: vLLM's profile run, max(forward over {batched} batched tokens, sampler over "
             f"{min(max_num_seqs, batched)} rows of logits) + MoE workspace (gpu_sharing/sizing/overheads.py, fitted "
             "to published vLLM profiles: python benchmarks/sizing.py)",
             "runtime: non-torch memory (RCCL buffers at tp > 1), ROCm's weight padding (+2.5% of weights)"
             + ("" if enforce_eager else "; graphs: capture pools by layer count")
             + "; context: HIP context (+ communicator at tp > 1), reserved beside vLLM's --gpu-memory-utilization "
               "budget")
    return ModelSize(param_count=acc.param_count, weights_bytes=w_total, weights_bytes_per_rank=w_rank,
                     kv_bytes_per_token=layout.bytes_per_token, kv_tokens=tokens if kv_cache_bytes is None else 0,
                     kv_bytes=kv, activation_bytes=over.activation_bytes,
                     runtime_overhead_bytes=over.runtime_bytes + over.graph_bytes + over.context_bytes,
                     total_bytes_per_rank=budget.total_bytes, tp=tp, source=source,
                     warnings=tuple(warnings), notes=notes, contract=contract)


def attention_heads(config: dict[str, Any]) -> int | None:
    v = config.get("num_attention_heads", config.get("n_head"))
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
