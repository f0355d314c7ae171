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

RUNTIME_BASE_BYTES = int(0.75 * GIB)
"""Non-torch memory at tp=1 plus allocator slack (fitted)."""
RUNTIME_TP_BYTES = int(0.75 * GIB)
"""Extra non-torch memory per rank when tp > 1 (communication buffers; fitted)."""
ACT_PER_TOKEN_FACTOR = 6.0
"""Activation peak per batched token, in units of (hidden + intermediate/tp) x activation dtype bytes (fitted)."""
LOGITS_COPIES = 3.0
"""fp32 logit rows of the dummy sampler run held at once (logits, probabilities, sort; fitted)."""
GRAPH_BASE_BYTES = int(0.25 * GIB)
GRAPH_PER_SEQ_BYTES = 512 * 1024
"""Graph pools grow with the capture sizes, which go up to max_num_seqs (fitted)."""


@dataclass(frozen=True)
class Overheads:
    activation_bytes: int
    graph_bytes: int
    runtime_bytes: int

    @property
    def total(self) -> int:
        return self.activation_bytes + self.graph_bytes + self.runtime_bytes


def estimate_overheads(*, hidden: int, intermediate: int, vocab: int, tp: int, batched_tokens: int,
                       max_num_seqs: int, act_dtype_bytes: int, enforce_eager: bool) -> Overheads:
    per_token = (hidden + math.ceil(intermediate / tp)) * act_dtype_bytes
    activation = int(ACT_PER_TOKEN_FACTOR * batched_tokens * per_token
                     + LOGITS_COPIES * min(max_num_seqs, batched_tokens) * vocab * 4)
    graph = 0 if enforce_eager else GRAPH_BASE_BYTES + GRAPH_PER_SEQ_BYTES * min(max_num_seqs, 512)
    runtime = RUNTIME_BASE_BYTES + (RUNTIME_TP_BYTES if tp > 1 else 0)
    return Overheads(activation, graph, runtime)
