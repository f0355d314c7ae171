"""The fake vLLM's memory profile and start-up memory rules, copied from vLLM 0.33.0's source.

Each rule below cites the vLLM 0.33.0 file:line it copies and raises vLLM's own text (the
fake prints it as the root cause and exits 1, like `vllm serve` when the engine core fails):
1. scheduler limits (vllm/config/scheduler.py:331): max_num_batched_tokens >= max_num_seqs;
2. max_model_len above the model's maximum (vllm/config/model.py:2663);
3. device-dependent defaults when --max-num-batched-tokens / --max-num-seqs are not given
   (vllm/engine/arg_utils.py:2973-3006: by the device's TOTAL memory);
4. the free-memory check at start-up, also with --kv-cache-memory-bytes
   (vllm/v1/worker/gpu_worker.py:542 -> vllm/v1/worker/utils.py:716-770 request_memory);
5. weights that do not fit the device: torch's allocator raises "HIP out of memory"
   (c10/cuda/CUDACachingAllocator.cpp, hipified on ROCm);
6. the KV pool: requested - (weights + non-torch + activation peak) - graph estimate
   (vllm/v1/worker/gpu_worker.py:641-755), or exactly --kv-cache-memory-bytes (gpu_worker.py:656);
   none left -> "No available memory for the cache blocks" (vllm/v1/core/kv_cache_planning.py:58);
   less than one max_model_len sequence -> "To serve at least one request with the model's max
   seq len" (vllm/v1/core/kv_cache_planning.py:78).

The profile per instance (weights, non-torch, activation peak of the profile run over
max_num_batched_tokens tokens and min(max_num_seqs, tokens) sampled rows, graphs unless
--enforce-eager, and the context taken before vLLM's first snapshot) is the fake's stand-in for
what vLLM measures. Weights come from the model's config.json when the model is a local directory
(vLLM reads the same file) and are computed like the checkpoint's tensors; the overhead terms are
the fake's own "truth", each derived from one quoted vLLM log line below, independently of
gpu-sharing's fitted overhead model (GPU_SHARING_FAKE_PROFILE overrides any term, in bytes).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3

# The fake's "truth" for the overheads of vLLM 0.33 (the V1 engine's profile run, 0.17+ behaviour). Each
# constant is derived from ONE quoted log line, never from gpu_sharing/sizing/overheads.py (which is fitted
# to all the collected points and whose form differs): the fake stays an independent reference for the
# planner. Anchors (llm-d-planner accuracy/results/v0.19.0/logs, vLLM 0.19.0 on H100, T=8192, S=1024):
#   A1 meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log: "torch peak memory increase: 1.89GiB;
#      non-torch forward increase memory: 0.25GiB"; "worker init memory snapshot: ... cuda_memory=0.51GiB";
#      "Estimated CUDA graph memory: 0.84 GiB total" (32 layers). Vocabulary 128256: the sampler peak.
#   A2 codellama-codellama-7b-h--h100-80gb--tp1pp1dp1--8192.log: "torch peak memory increase: 0.77GiB"
#      (vocabulary 32016, intermediate 11008: the forward peak).
#   A3 meta-llama-llama-3-1-8b---h100-80gb--tp2pp1dp1--8192.log: "non-torch forward increase memory:
#      2.07GiB"; "cuda_memory=1.53GiB" at init (the communicator exists before vLLM's snapshot).
#   A4 qwen-qwen3-30b-a3b--h100-80gb--tp1pp1dp1--8192.log: "torch peak memory increase: 2.68GiB"
#      (128 experts, top-8, expert intermediate 768: the MoE workspace on top of the sampler peak).
# and the HIP context on an MI300X: "Free memory 191.46/191.98 GiB" at an empty GPU's vLLM start
# (code-search index file 71473938968).
SAMPLER_BYTES_PER_LOGIT = 1.89 * GIB / (1024 * 128256)
"""A1: torch peak per (sampled row x vocabulary entry) when the sampler sets the peak (~15.5 B: fp32 copies)."""
FORWARD_BYTES_PER_TOKEN_WIDTH = 0.77 * GIB / (8192 * (3 * 11008 + 4096) * 2)
"""A2: peak per token per (3 x intermediate + hidden) activation element of the forward over T tokens."""
MOE_BYTES_PER_EXPERT_SLOT = (2.68 - 1024 * 151936 * SAMPLER_BYTES_PER_LOGIT / GIB) * GIB / (8192 * 8 * 768 * 2)
"""A4: what the fused-MoE workspace adds per (token x top-k x expert intermediate x bf16), beyond the sampler."""
NON_TORCH_BYTES = int(0.25 * GIB)
NON_TORCH_TP_BYTES = int(2.07 * GIB)
CONTEXT_BYTES = int(0.52 * GIB)
CONTEXT_TP_BYTES = int(1.53 * GIB)
GRAPH_BYTES_PER_LAYER = int(0.84 * GIB / 32)


class StartupRefused(Exception):
    """vLLM refused to start; str(e) is vLLM's own text; ``kind`` is the exception class vLLM raises."""

    def __init__(self, text: str, kind: str = "ValueError"):
        super().__init__(text)
        self.kind = kind


def format_gib(b: int) -> str:
    """vllm/utils/mem_utils.py:30."""
    return f"{round(b / GIB, 2)}"


def batch_defaults(device_total_bytes: int, device_name: str) -> tuple[int, int]:
    """vllm/engine/arg_utils.py:2973-3006, OPENAI_API_SERVER column: (max_num_batched_tokens, max_num_seqs)."""
    if device_total_bytes >= 160 * GIB:
        return 16384, 1024
    if device_total_bytes >= 70 * GIB and "a100" not in device_name.lower():
        return 8192, 1024
    return 2048, 256


@dataclass(frozen=True)
class ModelFacts:
    weights_bytes_per_rank: int
    kv_bytes_per_token_per_rank: int
    hidden: int
    max_position_embeddings: int | None
    intermediate: int = 0
    vocab: int = 0
    layers: int = 0
    experts_per_tok: int = 0
    expert_intermediate: int = 0


def _shape(cfg: dict[str, Any]) -> dict[str, int]:
    """What vLLM's profile run depends on, read from config.json the way the fake needs it (text_config first)."""
    c = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg

    def get(*keys: str) -> int:
        return next((int(c[k]) for k in keys if isinstance(c.get(k), (int, float))), 0)

    experts = get("num_local_experts", "num_experts", "n_routed_experts")
    topk = get("num_experts_per_tok", "experts_per_token") if experts else 0
    hidden = get("hidden_size", "n_embd")
    inter = get("intermediate_size", "n_inner", "ffn_hidden_size") or 4 * hidden  # falcon, gpt2: 4 x hidden
    return {"hidden": hidden, "vocab": get("vocab_size"), "layers": get("num_hidden_layers", "n_layer"),
            "intermediate": get("shared_expert_intermediate_size") if topk else inter, "experts_per_tok": topk,
            "expert_intermediate": (get("moe_intermediate_size") or inter) if topk else 0}


def model_facts(model: str, tp: int, kv_dtype_bytes: int | None) -> ModelFacts | None:
    cfg_path = Path(model) / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
        from gpu_sharing.sizing.architectures import account
        from gpu_sharing.sizing.estimate import quantization_method, weights_bytes
        from gpu_sharing.sizing.kv_cache import kv_layout

        method, qc = quantization_method(cfg, None)
        _, per_rank = weights_bytes(account(cfg), 2, method, qc, tp)  # vLLM loads auto dtype as bf16/fp16
        layout = kv_layout(cfg, tp=tp, dtype_bytes=kv_dtype_bytes or 2)
    except Exception:  # noqa: BLE001 - an unreadable config: the fake knows nothing about the model
        return None
    mpe = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    shape = _shape(cfg)
    return ModelFacts(per_rank, layout.bytes_per_token, shape.pop("hidden") or 4096, int(mpe) if mpe else None, **shape)


@dataclass(frozen=True)
class Profile:
    weights_bytes: int
    non_torch_bytes: int
    activation_peak_bytes: int
    graph_bytes: int
    context_bytes: int = 0
    """Taken before vLLM's first snapshot: outside its requested budget (see request_memory)."""

    @property
    def non_kv_bytes(self) -> int:
        """What vLLM subtracts from its requested budget before the KV pool (the context is not in it)."""
        return self.weights_bytes + self.non_torch_bytes + self.activation_peak_bytes + self.graph_bytes


def activation_peak(facts: ModelFacts, *, tp: int, batched_tokens: int, max_num_seqs: int) -> int:
    """vLLM's profile_run (vllm/v1/worker/gpu_model_runner.py): a forward over T = max_num_batched_tokens tokens,
    then the sampler over min(max_num_seqs, T) rows of all-gathered logits; the torch peak is the larger of the
    two (anchors A1, A2) plus the MoE workspace (A4)."""
    rows = min(max_num_seqs, batched_tokens)
    sampler = rows * facts.vocab * SAMPLER_BYTES_PER_LOGIT
    forward = batched_tokens * (3 * math.ceil(facts.intermediate / tp) + facts.hidden) * 2 * FORWARD_BYTES_PER_TOKEN_WIDTH
    moe = batched_tokens * facts.experts_per_tok * math.ceil(facts.expert_intermediate / tp) * 2 * MOE_BYTES_PER_EXPERT_SLOT
    return int(max(sampler, forward) + moe)


def profile_for(facts: ModelFacts | None, *, tp: int, batched_tokens: int, enforce_eager: bool,
                max_num_seqs: int = 256) -> Profile:
    """The model's profile; an unknown model (no config.json beside it, e.g. a Hugging Face id in simulation)
    gets an empty profile but for the context (a HIP context exists whatever the model), so only the
    free-memory and scheduler rules apply to it."""
    context = CONTEXT_BYTES if tp == 1 else CONTEXT_TP_BYTES
    if facts is None:
        p = {"weights_bytes": 0, "non_torch_bytes": 0, "activation_peak_bytes": 0, "graph_bytes": 0,
             "context_bytes": context}
    else:
        p = {"weights_bytes": facts.weights_bytes_per_rank,
             "non_torch_bytes": NON_TORCH_BYTES if tp == 1 else NON_TORCH_TP_BYTES,
             "activation_peak_bytes": activation_peak(facts, tp=tp, batched_tokens=batched_tokens,
                                                      max_num_seqs=max_num_seqs),
             "graph_bytes": 0 if enforce_eager else GRAPH_BYTES_PER_LAYER * facts.layers,
             "context_bytes": context}
    override = os.environ.get("GPU_SHARING_FAKE_PROFILE")
    if override:
        p.update({k: int(v) for k, v in json.loads(override).items() if k in p})
    return Profile(**p)


def startup_seconds(base_s: float, weights_bytes: int, disk_bytes_per_s: float, graph_capture_s: float,
                    enforce_eager: bool) -> tuple[float, float, float]:
    """(load seconds, graph seconds, total): what a real vLLM start spends before /health answers.

    vLLM 0.33 logs each part (vllm/v1/worker/gpu_model_runner.py "Model loading took %.4f GiB memory and
    %.6f seconds"; "Graph capturing finished in %.0f secs" unless --enforce-eager, which skips capture):
    the weights are read from disk, so a cold start grows with them; the engine start is the rest."""
    load_s = weights_bytes / disk_bytes_per_s if disk_bytes_per_s > 0 else 0.0
    graph_s = 0.0 if enforce_eager else graph_capture_s
    return load_s, graph_s, base_s + load_s + graph_s


def check_scheduler(max_num_batched_tokens: int, max_num_seqs: int) -> None:
    if max_num_batched_tokens < max_num_seqs:  # vllm/config/scheduler.py:331
        raise StartupRefused(f"max_num_batched_tokens ({max_num_batched_tokens}) must be greater than or equal to "
                             f"max_num_seqs ({max_num_seqs}).")


def check_max_model_len(max_model_len: int | None, facts: ModelFacts | None) -> int:
    """The effective max_model_len: the model's maximum when unset (vllm/config/model.py:2640-2653)."""
    derived = facts.max_position_embeddings if facts and facts.max_position_embeddings else None
    if max_model_len is None:
        return derived or 4096
    if derived and max_model_len > derived:  # vllm/config/model.py:2663
        raise StartupRefused(f"User-specified max_model_len ({max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={derived} or model_max_length=None in "
                             "model's config.json).")
    return max_model_len


def request_memory(free_bytes: int, total_bytes: int, utilization: float, rank: int) -> int:
    """vllm/v1/worker/utils.py:724 and :762-770."""
    requested = math.ceil(total_bytes * utilization)
    if free_bytes < requested:
        raise StartupRefused(
            f"Free memory on device cuda:{rank} ({format_gib(free_bytes)}/{format_gib(total_bytes)} GiB) on startup "
            f"is less than desired GPU memory utilization ({utilization}, {format_gib(requested)} GiB). Decrease GPU "
            "memory utilization or reduce GPU memory used by other processes.")
    return requested


def check_weights_fit(weights_bytes: int, free_bytes: int, total_bytes: int, rank: int) -> None:
    """torch's caching allocator when the weights do not fit (c10/cuda/CUDACachingAllocator.cpp; HIP on ROCm)."""
    if weights_bytes > free_bytes:
        raise StartupRefused(
            f"HIP out of memory. Tried to allocate {weights_bytes / GIB:.2f} GiB. GPU {rank} has a total capacity of "
            f"{total_bytes / GIB:.2f} GiB of which {free_bytes / GIB:.2f} GiB is free.", kind="torch.OutOfMemoryError")


def kv_pool(requested: int, profile: Profile, kv_cache_memory_bytes: int | None) -> int:
    """vllm/v1/worker/gpu_worker.py:656 (fixed pool) and :753-755 (requested - non-KV - graph estimate)."""
    if kv_cache_memory_bytes:
        return kv_cache_memory_bytes
    return requested - profile.non_kv_bytes


def check_kv(available: int, max_model_len: int, kv_bytes_per_token: int, block_size: int) -> None:
    """vllm/v1/core/kv_cache_planning.py:56-85 _check_enough_kv_cache_memory."""
    if available <= 0:
        raise StartupRefused(
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
            "the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See "
            "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.")
    needed = math.ceil(max_model_len / block_size) * block_size * kv_bytes_per_token
    if needed > available:
        est = available // kv_bytes_per_token if kv_bytes_per_token else 0
        est_msg = f"Based on the available memory, the estimated maximum model length is {est}. " if est > 0 else ""
        raise StartupRefused(
            f"To serve at least one request with the model's max seq len ({max_model_len}), ({format_gib(needed)} "
            f"GiB KV cache is needed, which is larger than the available KV cache memory ({format_gib(available)} "
            f"GiB). {est_msg}Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU "
            "backend) or decreasing `max_model_len` when initializing the engine. See "
            "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.")


def describe(profile: Profile) -> dict[str, Any]:
    return {"weights_bytes": profile.weights_bytes, "non_torch_bytes": profile.non_torch_bytes,
            "activation_peak_bytes": profile.activation_peak_bytes, "graph_bytes": profile.graph_bytes,
            "context_bytes": profile.context_bytes}
