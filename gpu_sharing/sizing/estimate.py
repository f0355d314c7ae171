"""From config.json + serving options to bytes per tensor-parallel rank (pure).

weights: every checkpoint tensor (architectures.py) x bytes of its dtype or
quantization format; per rank, linears, experts, embeddings and lm_head are
split over tp (vLLM's column/row/vocab-parallel layers), norms, biases and
routers are replicated.
KV: kv_cache.py, for max_model_len x max_num_seqs tokens (or a fixed pool).
Overheads (documented estimates, always shown in the breakdown):
- activations: the profile run's peak for max_num_batched_tokens tokens,
  T x (4 x hidden + 2 x intermediate / tp) x dtype bytes, plus fp32 logits for
  max_num_seqs sampled rows (max_num_seqs x vocab x 4);
- ROCm runtime: HIP context, RCCL and the torch allocator's reserve, 1 GiB per rank
  (what a bare `torch.empty(1, device="cuda")` process shows in amd-smi on MI300X
  plus allocator slack);
- graph capture: 0.5 GiB per rank unless enforce_eager (vLLM's cudagraph estimate
  is subtracted from the budget since v0.21; HIP graphs for the default capture sizes).
Measured sizes (measured_store.py) replace all of this once an instance has run.
"""

from __future__ import annotations

import math
from typing import Any

from gpu_sharing.errors import UserError
from gpu_sharing.sizing.architectures import Accounting, account
from gpu_sharing.sizing.kv_cache import KV_DTYPE_BYTES, kv_layout
from gpu_sharing.sizing.types import ModelSize, SizeSource

GIB = 1024**3
RUNTIME_OVERHEAD_BYTES = 1 * GIB
GRAPH_CAPTURE_BYTES = GIB // 2
DEFAULT_MAX_MODEL_LEN_CAP = 8192
DEFAULT_BATCHED_TOKENS = 2048
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
QUANTIZED_KINDS = ("linear", "expert")
SPLIT_KINDS = ("linear", "expert", "embed", "lm_head")
KNOWN_QUANT = ("fp8", "awq", "gptq", "mxfp4", "bitsandbytes", "compressed-tensors")


def _dtype_bytes(dtype: str, config: dict[str, Any]) -> int:
    # A config without torch_dtype describes a float32 checkpoint (transformers' default).
    name = (config.get("torch_dtype") or config.get("dtype") or "float32") if dtype == "auto" else dtype
    if name not in DTYPE_BYTES:
        raise UserError(f"config.json: torch_dtype {name!r} is not one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


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
    if method in ("fp8", "compressed-tensors"):
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


def weights_bytes(acc: Accounting, base: int, method: str | None, qc: dict[str, Any], tp: int) -> tuple[int, int]:
    """(all ranks, per rank)."""
    total = per_rank = 0
    skip = set(qc.get("modules_to_not_convert") or qc.get("ignored_layers") or [])
    for t in acc.tensors:
        m = None if any(s and s in t.name for s in skip) else method
        b = _tensor_bytes(t.kind, t.rows, t.cols, base, m, qc) * t.count
        total += b
        per_rank += math.ceil(b / tp) if t.kind in SPLIT_KINDS else b
    return total, per_rank


def size_from_config_json(config: dict[str, Any], *, tp: int = 1, max_model_len: int | None = None,
                          max_num_seqs: int = 16, max_num_batched_tokens: int | None = None, dtype: str = "auto",
                          quantization: str | None = None, kv_cache_dtype: str = "auto",
                          kv_cache_bytes: int | None = None, enforce_eager: bool = False, block_size: int = 16,
                          source: SizeSource = SizeSource.CONFIG_JSON, config_name: str = "config.json") -> ModelSize:
    if tp < 1:
        raise UserError(f"tensor parallel size must be >= 1, got {tp}")
    acc = account(config, config_name)
    warnings: list[str] = []
    if acc.generic:
        source = SizeSource.ESTIMATE_GENERIC
        warnings.append(f"model_type {config.get('model_type')!r} is not a known architecture: estimated with the "
                        "llama rule (source estimate-generic); add it to the sizing catalog for an exact size")
    base = _dtype_bytes(dtype, config)
    method, qc = quantization_method(config, quantization)
    w_total, w_rank = weights_bytes(acc, base, method, qc, tp)
    kv_b = KV_DTYPE_BYTES.get(kv_cache_dtype)
    if kv_cache_dtype not in KV_DTYPE_BYTES:
        raise UserError(f"kv_cache_dtype {kv_cache_dtype!r} is not one of {', '.join(KV_DTYPE_BYTES)}")
    kv_dtype_bytes = kv_b if kv_b else (2 if base == 4 else base)
    layout = kv_layout(config, tp=tp, dtype_bytes=kv_dtype_bytes, source=config_name)
    max_pos = config.get("max_position_embeddings") or config.get("n_positions")
    if max_model_len is None:
        max_model_len = min(int(max_pos or DEFAULT_MAX_MODEL_LEN_CAP), DEFAULT_MAX_MODEL_LEN_CAP)
        warnings.append(f"max_model_len not set: sized for {max_model_len} tokens (set it to match what vLLM will use)")
    elif max_pos and max_model_len > int(max_pos):
        warnings.append(f"max_model_len {max_model_len} exceeds the model's max_position_embeddings {max_pos}")
    tokens = max_model_len * max_num_seqs
    kv = kv_cache_bytes if kv_cache_bytes is not None else layout.bytes_for(max_model_len, max_num_seqs, block_size)
    h = int(config.get("hidden_size") or config.get("n_embd") or config.get("n_embed") or 0)
    inter = int(config.get("moe_intermediate_size") or config.get("intermediate_size") or config.get("n_inner") or 4 * h)
    batched = max_num_batched_tokens or max(DEFAULT_BATCHED_TOKENS, max_num_seqs)
    vocab = int(config.get("vocab_size") or 0)
    activation = batched * (4 * h + 2 * inter // tp) * min(base, 2) + max_num_seqs * math.ceil(vocab / tp) * 4
    runtime = RUNTIME_OVERHEAD_BYTES + (0 if enforce_eager else GRAPH_CAPTURE_BYTES)
    notes = ("activations: T x (4 x hidden + 2 x intermediate / tp) x dtype + fp32 logits",
             "runtime: 1 GiB HIP/RCCL/allocator per rank" + ("" if enforce_eager else " + 0.5 GiB graph capture"))
    return ModelSize(param_count=acc.param_count, weights_bytes=w_total, weights_bytes_per_rank=w_rank,
                     kv_bytes_per_token=layout.bytes_per_token, kv_tokens=tokens if kv_cache_bytes is None else 0,
                     kv_bytes=kv, activation_bytes=activation, runtime_overhead_bytes=runtime,
                     total_bytes_per_rank=w_rank + kv + activation + runtime, tp=tp, source=source,
                     warnings=tuple(warnings), notes=notes)


def attention_heads(config: dict[str, Any]) -> int | None:
    v = config.get("num_attention_heads", config.get("n_head"))
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
