"""ROCm's padding of MXFP4 MoE expert weights, per tensor-parallel rank (pure).

Why: on ROCm, vLLM's Mxfp4MoEMethod.create_weights allocates every expert shard with both the
per-partition intermediate size and the hidden size rounded up to an alignment
(vllm/model_executor/layers/quantization/mxfp4.py, Mxfp4MoEMethod.create_weights:
``elif current_platform.is_rocm(): pad_align = get_padding_alignment();
intermediate_size_per_partition_after_pad = round_up(intermediate_size_per_partition, pad_align);
hidden_size = round_up(hidden_size, pad_align)``), and
vllm/model_executor/layers/quantization/utils/mxfp4_utils.py get_padding_alignment() returns
256 on gfx950 (MI350X/MI355X) and 128 otherwise (gfx942: MI300X/MI325X/MI300A). The tensors are
w13 [E, 2 x I_pad, H_pad / 2] and w2 [E, H_pad, I_pad / 2] bytes, plus one e8m0 scale byte per
32 values. At tensor parallelism without expert parallelism I_per_partition = I / tp, so the
rounding grows with tp: gpt-oss-120b (H = I = 2880) at tp 8 has 360 -> 512 (gfx950) or 384.
The checkpoint is not padded: only what each rank loads is.
"""

from __future__ import annotations

import math

GFX950_ALIGN = 256
OTHER_ALIGN = 128
MXFP4_BLOCK = 32


def mxfp4_pad_align(gfx_target: str | None) -> int:
    """The alignment for ``gfx_target``; unknown (None) takes gfx950's larger one: over- rather than under-size."""
    if gfx_target is None:
        return GFX950_ALIGN
    return GFX950_ALIGN if gfx_target.lower().startswith("gfx950") else OTHER_ALIGN


def _round_up(x: int, align: int) -> int:
    return math.ceil(x / align) * align


def padded_expert_rank_bytes(name: str, rows: int, cols: int, count: int, *, hidden: int, intermediate: int,
                             tp: int, align: int) -> int:
    """Bytes one rank loads for an MXFP4 expert tensor (rows x cols per expert, ``count`` experts x layers).

    Down projections (name ending in "down") are [hidden, intermediate]; the others are [k x intermediate,
    hidden] (gate_up k = 2, or gate+up+down stacked k = 3). Two fp4 values per byte + one scale byte per 32."""
    i_pad = _round_up(math.ceil(intermediate / tp), align)
    h_pad = _round_up(hidden, align)
    if name.endswith("down"):
        elements = h_pad * i_pad
    else:
        k = max(1, round(rows / intermediate)) if intermediate else 1
        elements = k * i_pad * h_pad
    del cols  # the hidden (or intermediate) side is taken from the config, padded
    return (elements // 2 + elements // MXFP4_BLOCK) * count
