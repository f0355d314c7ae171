"""The non-KV overheads of one vLLM rank: activation peak, graph capture, non-torch memory, context.

Why a model of its own: vLLM sizes the KV pool as requested - (weights + non-torch + activation
peak + graph estimate) (vllm/v1/worker/gpu_worker.py:641-755 determine_available_memory), so
whatever we under-estimate here is taken from the KV pool and can make vLLM refuse to start.

The form follows what vLLM's profile run does (vllm/v1/worker/gpu_model_runner.py profile_run,
and the model runner V2's vllm/v1/worker/gpu/model_runner.py profile_run):
  _dummy_run(max_num_batched_tokens): one forward over T = max_num_batched_tokens tokens split
  into R = min(T, max_num_seqs) requests; then _dummy_sampler_run on the R last hidden states:
  compute_logits -> R x vocab logits, all-gathered over tensor parallelism (every rank holds the
  whole vocabulary), upcast to fp32 and sampled.
vLLM logs the torch peak of that run ("torch peak memory increase", "peak activation"). The
forward's transients are freed before the sampler runs, so the peak is the larger of the two:
  forward = T x (3 x I/tp + C_H x h) x activation bytes
      (SwiGLU: the gate_up output 2I and the activation output I per rank live together, plus
      C_H hidden-sized buffers: residual, normed input, attention output, fp32 norm upcasts)
  sampler = K x R x vocab x 4 bytes        (K fp32 logit copies held at once by the sampler)
  activation = max(forward, sampler) + M x T x top_k x (3 x I_expert/tp + h) x bytes
      (a fused-MoE workspace sized by the batch stays allocated through the sampler run)
K is what changed between vLLM releases (the dummy sampler run's top-k/top-p/logprob work):
ENGINE_ERAS holds one rule set per era the evidence separates. vLLM 0.33 (the product's
target) is in the newest era. Non-torch memory is vLLM's "non-torch forward increase"
(communication buffers at tp > 1). The context (HIP/CUDA context, plus the communicator
initialised at tp > 1) is taken before vLLM's first memory snapshot, so it is NOT inside
vLLM's requested budget (gpu_worker.py: requested = total x utilization, checked against the
free memory left after it): on a shared partition it must be reserved beside that budget.

Constants are fitted to tests/data/vllm_memory_profiles.json (published logs, each quoted with
its source); benchmarks/sizing.py refits them on one half, reports both halves and each term.
The fit's loss counts an under-estimate twice an over-estimate (an under-estimate makes vLLM
refuse to start), so the constants sit slightly above the median point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

GIB = 1024**3


@dataclass(frozen=True)
class ProfileRules:
    """The constants of one engine era (see the module docstring for the formula)."""

    era: str
    sampler_logit_copies: float
    """K: fp32 copies of the R x vocab logits the dummy sampler run holds at its peak."""
    hidden_copies: float
    """C_H: hidden-sized activation buffers per token in the forward's peak."""
    moe_workspace: float
    """M: share of the fused-MoE workspace (T x top_k x (3 I_expert/tp + h)) that persists."""
    non_torch_tp1_bytes: int
    non_torch_tpn_bytes: int
    """vLLM's "non-torch forward increase" at tp = 1 and tp > 1 (communication buffers)."""


ENGINE_ERAS: dict[str, ProfileRules] = {
    # V0 engine: profile_run samples with top_k = vocab - 1 and top_p < 1 (a full sort): K ~ 10
    # (Llama-3.1-8B V0 on H100: 1.19 GiB logged for 256 rows x 128256 x 4 B = 0.12 GiB).
    "v0": ProfileRules("v0", 9.75, 5.2, 0.95, int(0.12 * GIB), int(0.2 * GIB)),
    # V1 0.10.1-0.16: the dummy sampler run does top-k/top-p again: K ~ 9.7 (Qwen3-14B 5.64 GiB
    # on 0.15/0.16 vs 2.23 GiB on 0.17, llm-d-planner version sweep; 0.11.0 on H100: 4.76 GiB for
    # Llama-3.1-8B, 5.56 for Qwen3-0.6B); non-torch 0.13 GiB, 0.55 GiB at tp 2 on 0.11.0.
    "v1-0.10.1-0.16": ProfileRules("v1-0.10.1-0.16", 9.75, 5.2, 0.95, int(0.13 * GIB), int(0.55 * GIB)),
    # V1 <= 0.10.0 and 0.17+: K ~ 3.9 (41 llm-d-planner v0.19.0 runs); NCCL buffers ~2.1 GiB at tp > 1.
    # Doubtful for 0.27+ (model runner V2), 3 points only: Qwen2.5-0.5B 0.27.1 and a ROCm Qwen3.8-27B
    # log peak lower (K ~ 1.7-2.5, so this over-estimates them), Llama-3.1-8B on 0.31 at T=2048/S=256
    # logs 1.44 GiB, far above any rule here (T/S not printed: inferred from the A100 default tier).
    "v1-0.17+": ProfileRules("v1-0.17+", 3.9, 5.2, 0.95, int(0.25 * GIB), int(2.13 * GIB)),
}
CURRENT_ERA = "v1-0.17+"
"""vLLM 0.33, the version the product launches."""

CONTEXT_TP1_BYTES = int(0.52 * GIB)
"""Device memory in use before vLLM's first snapshot at tp = 1: MI300X 191.46 of 191.98 GiB free at an
empty GPU's start (code-search index file 71473938968); H100 "worker init memory snapshot ...
cuda_memory=0.51GiB" (llm-d-planner v0.19.0 logs); A100 0.41 GiB (index file 70682754770)."""
CONTEXT_TPN_BYTES = int(2.0 * GIB)
"""At tp > 1 the communicator is initialised before that snapshot too: 1.51-1.55 GiB on H100 at tp 2-4 for
dense models, 1.99-2.07 GiB for MoE/multimodal ones (llm-d-planner v0.19.0 logs); the 2/3 quantile,
rounded up. No ROCm log at tp > 1 was found: RCCL is assumed alike (doubtful)."""
GRAPH_BASE_BYTES = int(0.267 * GIB)
GRAPH_PER_LAYER_BYTES = int(0.0179 * GIB)
"""vLLM's "Estimated CUDA graph memory" (subtracted from the KV pool since 0.21): 0.52 GiB (26 layers) to
1.92 GiB (80 layers) for 51 capture sizes up to 512 (llm-d-planner v0.19.0 logs); fitted as base +
per layer (benchmarks/profile_fit.py fit_graph), which benchmarks/sizing.py reports against each logged
estimate and actual capture."""
ROCM_WEIGHTS_ALLOWANCE = 0.025
"""Weights load larger on ROCm than the checkpoint's tensor bytes (Llama-3.1-8B: 15.30 GiB logged on MI300X
vs 14.99 GiB on H100, +2.1%): padded/pre-shuffled layouts. Counted in the runtime term (inside vLLM's budget,
since vLLM measures it as weights)."""


@dataclass(frozen=True)
class ModelShape:
    """What the profile run's memory depends on, from config.json."""

    hidden: int
    intermediate: int
    """Largest dense MLP intermediate (dense layers or shared experts); 0 for an all-expert MLP."""
    vocab: int
    layers: int
    moe_intermediate: int = 0
    experts_per_tok: int = 0
    fused_moe_workspace: bool = True
    """False for MXFP4 experts: vLLM runs them with the Triton matmul_ogs kernels (OAITritonExperts in
    vllm/model_executor/layers/quantization/mxfp4.py, CUDA and ROCm alike), not fused_moe's batch-sized
    workspace; logged: gpt-oss-20b/120b peaks equal their sampler peak (7.38 GiB on 0.11, 2.87 on 0.19)."""


def model_shape(config: Mapping[str, Any]) -> ModelShape:
    """The shape from a Hugging Face config.json (a multimodal model's text_config when present)."""
    c = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config

    def num(*keys: str) -> int:
        for k in keys:
            v = c.get(k) if k in c else config.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return int(v)
        return 0

    h = num("hidden_size", "n_embd", "n_embed", "d_model")
    inter = num("intermediate_size", "n_inner", "ffn_dim") or 4 * h
    topk = num("num_experts_per_tok", "experts_per_token", "moe_topk")
    experts = num("num_local_experts", "num_experts", "n_routed_experts")
    moe_i = num("moe_intermediate_size") or (inter if experts and topk else 0)
    if experts and topk:
        dense = num("shared_expert_intermediate_size") or num("n_shared_experts") * moe_i
        if num("first_k_dense_replace") or num("intermediate_size_mlp"):
            dense = max(dense, num("intermediate_size_mlp") or inter)
        inter = dense
    qc = config.get("quantization_config") if isinstance(config.get("quantization_config"), Mapping) else {}
    return ModelShape(hidden=h, intermediate=inter, vocab=num("vocab_size", "padded_vocab_size"),
                      layers=num("num_hidden_layers", "n_layer", "num_layers"),
                      moe_intermediate=moe_i if experts and topk else 0, experts_per_tok=topk if experts else 0,
                      fused_moe_workspace=str(qc.get("quant_method", "")).lower() != "mxfp4")


@dataclass(frozen=True)
class ActivationParts:
    forward_bytes: int
    sampler_bytes: int
    moe_workspace_bytes: int

    @property
    def total(self) -> int:
        return max(self.forward_bytes, self.sampler_bytes) + self.moe_workspace_bytes


def activation_parts(shape: ModelShape, *, tp: int, batched_tokens: int, max_num_seqs: int, act_dtype_bytes: int,
                     rules: ProfileRules) -> ActivationParts:
    t = batched_tokens
    rows = min(max_num_seqs, t)
    forward = t * (3 * math.ceil(shape.intermediate / tp) + rules.hidden_copies * shape.hidden) * act_dtype_bytes
    sampler = rules.sampler_logit_copies * rows * shape.vocab * 4
    moe = (rules.moe_workspace * t * shape.experts_per_tok
           * (3 * math.ceil(shape.moe_intermediate / tp) + shape.hidden) * act_dtype_bytes
           if shape.fused_moe_workspace else 0)
    return ActivationParts(int(forward), int(sampler), int(moe))


def non_torch_bytes(tp: int, rules: ProfileRules) -> int:
    return rules.non_torch_tp1_bytes if tp == 1 else rules.non_torch_tpn_bytes


def context_bytes(tp: int) -> int:
    return CONTEXT_TP1_BYTES if tp == 1 else CONTEXT_TPN_BYTES


def graph_bytes(layers: int, enforce_eager: bool) -> int:
    return 0 if enforce_eager else GRAPH_BASE_BYTES + GRAPH_PER_LAYER_BYTES * layers


@dataclass(frozen=True)
class Overheads:
    activation_bytes: int
    graph_bytes: int
    runtime_bytes: int
    """vLLM's non-torch memory + ROCm's weight padding allowance (inside vLLM's requested budget)."""
    context_bytes: int
    """HIP context (+ communicator at tp > 1): outside vLLM's requested budget, beside it on the partition."""

    @property
    def total(self) -> int:
        return self.activation_bytes + self.graph_bytes + self.runtime_bytes + self.context_bytes


def estimate_overheads(shape: ModelShape, *, tp: int, batched_tokens: int, max_num_seqs: int, act_dtype_bytes: int,
                       enforce_eager: bool, weights_bytes_per_rank: int = 0, era: str = CURRENT_ERA) -> Overheads:
    rules = ENGINE_ERAS[era]
    act = activation_parts(shape, tp=tp, batched_tokens=batched_tokens, max_num_seqs=max_num_seqs,
                           act_dtype_bytes=act_dtype_bytes, rules=rules).total
    runtime = non_torch_bytes(tp, rules) + math.ceil(weights_bytes_per_rank * ROCM_WEIGHTS_ALLOWANCE)
    return Overheads(act, graph_bytes(shape.layers, enforce_eager), runtime, context_bytes(tp))
