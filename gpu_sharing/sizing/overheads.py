"""The non-KV overheads of one vLLM 0.33 rank: activation peak, graph capture, non-torch runtime.

Why a model of its own: vLLM sizes the KV pool as requested - (weights + non-torch + activation
peak + graph estimate) (vllm/v1/worker/gpu_worker.py:641-755 determine_available_memory), so
whatever we under-estimate here is taken from the KV pool and can make vLLM refuse to start.
The terms follow what vLLM measures:
- non-torch: HIP/CUDA context, RCCL/NCCL buffers, allocator reserve ("non_torch_memory");
  larger with tensor parallelism (communication buffers);
- activation peak: torch peak minus allocated during the profile run of a dummy batch of
  max_num_batched_tokens tokens ("PyTorch activation peak memory"), plus the dummy sampler run
  over max_num_seqs rows of fp32 logits over the whole vocabulary;
- graphs: the cudagraph estimate vLLM subtracts since v0.21 unless --enforce-eager
  ("Graph capturing finished ... took").
The constants are fitted to published vLLM memory-profiling logs (tests/data/vllm_memory_profiles.json,
benchmarks/sizing.py prints the error of each point); they are documented estimates, and a measured
size from a run replaces the whole estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1024**3

CONTEXT_BYTES = int(0.4 * GIB)
"""HIP context and runtime libraries, taken before vLLM's first memory snapshot (so not in its logs, but on
the partition): measured order of a bare torch process on MI300X."""
NON_TORCH_BYTES = int(0.1 * GIB)
"""vLLM's "non_torch_memory" at tp=1 (fitted: logged 0.01-0.25 GiB)."""
NON_TORCH_TP_BYTES = int(0.25 * GIB)
"""At tp > 1 (RCCL buffers; logged 0.20 GiB at tp=4)."""
ACT_PER_TOKEN_FACTOR = 2.0
"""Activation peak per batched token, in units of (hidden + intermediate/tp) x activation dtype bytes (fitted)."""
LOGITS_COPIES = 5.5
"""fp32 logit rows of the dummy sampler run over min(max_num_seqs, tokens) rows held at once (fitted)."""
ROCM_WEIGHTS_ALLOWANCE = 0.025
"""Weights load larger on ROCm than the checkpoint's tensor bytes (Llama-3.1-8B: 15.30 GiB logged on MI300X
vs 14.99 GiB on H100, +2.1%): padded/pre-shuffled layouts. Counted in the runtime term."""
GRAPH_BASE_BYTES = int(0.25 * GIB)
GRAPH_PER_SEQ_BYTES = 1024 * 1024
"""Graph pools grow with the capture sizes, which go up to max_num_seqs (logged 0.17-0.54 GiB at 256)."""


@dataclass(frozen=True)
class Overheads:
    activation_bytes: int
    graph_bytes: int
    runtime_bytes: int
    """HIP context + vLLM's non-torch memory."""

    @property
    def total(self) -> int:
        return self.activation_bytes + self.graph_bytes + self.runtime_bytes


def estimate_overheads(*, hidden: int, intermediate: int, vocab: int, tp: int, batched_tokens: int,
                       max_num_seqs: int, act_dtype_bytes: int, enforce_eager: bool,
                       weights_bytes_per_rank: int = 0) -> Overheads:
    per_token = (hidden + math.ceil(intermediate / tp)) * act_dtype_bytes
    activation = int(ACT_PER_TOKEN_FACTOR * batched_tokens * per_token
                     + LOGITS_COPIES * min(max_num_seqs, batched_tokens) * vocab * 4)
    graph = 0 if enforce_eager else GRAPH_BASE_BYTES + GRAPH_PER_SEQ_BYTES * min(max_num_seqs, 512)
    runtime = (CONTEXT_BYTES + (NON_TORCH_TP_BYTES if tp > 1 else NON_TORCH_BYTES)
               + math.ceil(weights_bytes_per_rank * ROCM_WEIGHTS_ALLOWANCE))
    return Overheads(activation, graph, runtime)
