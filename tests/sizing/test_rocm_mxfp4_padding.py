"""ROCm's MXFP4 MoE expert padding (vllm/model_executor/layers/quantization/mxfp4.py Mxfp4MoEMethod.create_weights,
ROCm branch: intermediate-per-partition and hidden rounded up to get_padding_alignment(): 256 on gfx950, else 128).

The expected bytes are written from vLLM's parameter shapes (w13 [E, 2*I_pad, H_pad/2], w13 scales
[E, 2*I_pad, H_pad/32], w2 [E, H_pad, I_pad/2], w2 scales [E, H_pad, I_pad/32], uint8), not from our code.
"""

from __future__ import annotations

import math

import pytest

from gpu_sharing.sizing import size_from_config_json

GPT_OSS_120B = {"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 36,
                "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 128,
                "num_experts_per_tok": 4, "vocab_size": 201088, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                "quantization_config": {"quant_method": "mxfp4"}}


def vllm_expert_bytes(experts: int, layers: int, hidden: int, inter: int, tp: int, align: int) -> int:
    i_pad = math.ceil(math.ceil(inter / tp) / align) * align
    h_pad = math.ceil(hidden / align) * align
    w13 = 2 * i_pad * (h_pad // 2) + 2 * i_pad * (h_pad // 32)
    w2 = h_pad * (i_pad // 2) + h_pad * (i_pad // 32)
    return experts * layers * (w13 + w2)


def unpadded_expert_bytes(tp: int) -> int:
    n = 128 * 36 * 3 * 2880 * 2880
    return math.ceil((n // 2 + n // 32) / tp)


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_per_rank_weights_hold_the_padded_expert_shards(tp):
    """Only the expert shards depend on the target's alignment: the per-rank difference between gfx950 and gfx942
    is exactly the difference of vLLM's padded parameter shapes, and what is left is the same non-expert part."""
    sizes = {gfx: size_from_config_json(GPT_OSS_120B, tp=tp, max_model_len=4096, max_num_seqs=1, gfx_target=gfx)
             .weights_bytes_per_rank for gfx in ("gfx950", "gfx942", None)}
    p950, p942 = (vllm_expert_bytes(128, 36, 2880, 2880, tp, a) for a in (256, 128))
    assert sizes["gfx950"] - sizes["gfx942"] == p950 - p942 > 0
    assert sizes[None] == sizes["gfx950"]  # unknown target: the larger alignment
    non_expert = sizes["gfx942"] - p942
    assert 0 < non_expert < sizes["gfx942"] / 2  # attention, embeddings, routers: bf16, a few GB
    assert sizes["gfx942"] > non_expert + unpadded_expert_bytes(tp)  # padded is more than the checkpoint's share


def test_padding_grows_with_tensor_parallelism_and_the_checkpoint_is_unchanged():
    by_tp = {tp: size_from_config_json(GPT_OSS_120B, tp=tp, max_model_len=4096, max_num_seqs=1, gfx_target="gfx950")
             for tp in (1, 8)}
    # 2880/8 = 360 -> 512 and 2880 -> 3072 on gfx950: the experts load 1.52x their checkpoint share at tp 8
    expert_ratio = vllm_expert_bytes(128, 36, 2880, 2880, 8, 256) / unpadded_expert_bytes(8)
    assert 1.5 < expert_ratio < 1.53
    assert by_tp[1].weights_bytes == by_tp[8].weights_bytes  # the checkpoint is not padded
    mi300 = size_from_config_json(GPT_OSS_120B, tp=8, max_model_len=4096, max_num_seqs=1, gfx_target="gfx942")
    assert mi300.weights_bytes_per_rank < by_tp[8].weights_bytes_per_rank


def test_non_mxfp4_models_are_not_padded():
    bf16 = {k: v for k, v in GPT_OSS_120B.items() if k != "quantization_config"}
    a = size_from_config_json(bf16, tp=8, max_model_len=4096, max_num_seqs=1, gfx_target="gfx950")
    b = size_from_config_json(bf16, tp=8, max_model_len=4096, max_num_seqs=1, gfx_target="gfx942")
    assert a.weights_bytes_per_rank == b.weights_bytes_per_rank
