"""The launch contract: every number the sizing assumed, from which the plan's memory figure AND the argv come.

Why: vLLM 0.33 fills in whatever we do not pass with its own defaults (the model's whole context,
device-dependent batch sizes: vllm/engine/arg_utils.py:2940-3006), and then sizes its KV pool from
what is left (vllm/v1/worker/gpu_worker.py:641-755). If the launch does not say exactly what the
plan sized, the instance either refuses to start ("To serve at least one request with the model's
max seq len", vllm/v1/core/kv_cache_planning.py:78) or takes more than its share. So one frozen
object per instance holds the context length, sequences, batched tokens, KV dtype, block size
and the per-rank budget split into weights, KV, activations, graphs, runtime and extras; the
argv builder (gpu_sharing/runtime/launch_spec.py) only prints it.

Auto-fit: when ``max_model_len`` is not configured, the demand is sized for min(model maximum,
8192) tokens, and at launch the contract is re-fitted to the placement's budget: the longest
context (a multiple of the block size, at most the model's maximum) whose KV for max_num_seqs
sequences fits what is left after weights and overheads, like vLLM's own ``--max-model-len auto``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpu_sharing.sizing.kv_cache import KvLayout

DEFAULT_CONTEXT_CAP = 8192
"""Context the demand is sized for when max_model_len is not configured (at most the model's maximum)."""
DEFAULT_BATCHED_TOKENS = 2048
"""max_num_batched_tokens when not configured: vLLM 0.33's own default for devices under 70 GiB
(arg_utils.py:2997-3002), passed explicitly so a 192 GB GPU does not silently get 16384."""


def default_batched_tokens(max_num_seqs: int) -> int:
    """vLLM requires max_num_batched_tokens >= max_num_seqs (vllm/config/scheduler.py:331)."""
    return max(DEFAULT_BATCHED_TOKENS, max_num_seqs)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes per tensor-parallel rank."""

    weights_bytes: int
    kv_bytes: int
    activation_bytes: int
    graph_bytes: int
    runtime_bytes: int
    """vLLM's non-torch memory, ROCm's weight padding allowance and the context (see context_bytes)."""
    extras_bytes: int = 0
    """LoRA adapter slots and a speculative draft model."""
    context_bytes: int = 0
    """The part of runtime_bytes that is the HIP context (+ the communicator at tp > 1): in use before vLLM's
    first memory snapshot, so outside the budget vLLM requests (vllm/v1/worker/utils.py request_memory:
    total x gpu_memory_utilization, checked against the free memory left after it) but on the partition."""

    @property
    def non_kv_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes + self.graph_bytes + self.runtime_bytes + self.extras_bytes

    @property
    def total_bytes(self) -> int:
        """What the instance occupies on the partition: vLLM's requested budget + the context."""
        return self.non_kv_bytes + self.kv_bytes

    @property
    def requested_bytes(self) -> int:
        """What vLLM must be asked for (--gpu-memory-utilization): everything but the context."""
        return self.total_bytes - self.context_bytes


@dataclass(frozen=True)
class LaunchContract:
    tp: int
    max_model_len: int | None
    """Passed as --max-model-len; None only when no config.json is known (then ``auto``: vLLM fits it)."""
    max_model_len_auto: bool
    """True when chosen by auto-fit (max_model_len not configured)."""
    max_position_embeddings: int | None
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    block_size: int
    enforce_eager: bool
    budget: MemoryBudget
    fixed_kv_bytes: int | None = None
    """The model's kv_cache_bytes: a fixed pool passed as --kv-cache-memory-bytes."""
    layout: KvLayout | None = None
    """KV bytes per token per layer kind, to re-fit the context to another budget."""

    @property
    def total_bytes_per_rank(self) -> int:
        return self.budget.total_bytes

    def kv_needed_for(self, context_tokens: int, sequences: int) -> int:
        if self.layout is None:
            return 0
        return self.layout.bytes_for(context_tokens, sequences, self.block_size)

    def with_total(self, total_bytes: int) -> "LaunchContract":
        """The same contract with a different per-rank total (a catalog entry or a measured size):
        what is not weights or overheads is KV pool (vLLM gives the rest of its budget to KV)."""
        kv = max(0, total_bytes - self.budget.non_kv_bytes)
        return replace(self, budget=replace(self.budget, kv_bytes=kv))

    def fitted_to(self, budget_bytes: int) -> "LaunchContract":
        """Re-fit to a placement's per-rank budget: KV gets what is left; an auto context grows or
        shrinks to the longest one whose KV for max_num_seqs sequences fits."""
        out = self.with_total(max(budget_bytes, self.budget.non_kv_bytes))
        if not self.max_model_len_auto or self.layout is None or self.fixed_kv_bytes is not None:
            return out
        kv = out.budget.kv_bytes
        cap = self.max_position_embeddings or (1 << 21)
        lo, hi = 0, cap // self.block_size
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.kv_needed_for(mid * self.block_size, self.max_num_seqs) <= kv:
                lo = mid
            else:
                hi = mid - 1
        fitted = lo * self.block_size if lo else self.max_model_len
        if self.max_position_embeddings and fitted and fitted > self.max_position_embeddings:
            fitted = self.max_position_embeddings
        return replace(out, max_model_len=fitted)

    def memory_fraction(self, partition_total_bytes: int) -> float:
        """Smallest 4-decimal fraction f with ceil(total x f) >= the requested budget (the total minus the
        context, which vLLM finds already in use), capped at 1: vLLM requests ceil(total x
        gpu_memory_utilization) (vllm/v1/worker/utils.py:724) and sizes its KV pool inside that."""
        return utilization_for(self.budget.requested_bytes, partition_total_bytes)


def utilization_for(budget_bytes: int, partition_total_bytes: int) -> float:
    if partition_total_bytes <= 0:
        raise ValueError("partition reports no VRAM")
    f = math.ceil(budget_bytes / partition_total_bytes * 10_000) / 10_000
    return min(1.0, max(0.0001, f))
