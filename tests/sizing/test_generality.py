"""The rules are general: models of the same families that are NOT in the published data.

Counts: gpt-oss-20b 20,914,757,184 (huggingface.js corrected count, see tests/data README gotchas);
Mixtral-8x22B base 140,620,634,112 and Mistral-7B-v0.3 = v0.1 + 6,291,456 (vocab 32768) (same source);
Qwen3-32B 32,762,123,264 (Hub safetensors count); DeepSeek-V3 671,026,419,200 main-model parameters
(the checkpoint's extra 11.5B multi-token-prediction layer is not part of the served model).
"""

from __future__ import annotations

import pytest

from gpu_sharing.sizing import size_from_config_json
from gpu_sharing.sizing.architectures import account

CASES = {
    "gpt-oss-20b": ({"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 24,
                     "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
                     "vocab_size": 201088, "tie_word_embeddings": False}, 20_914_757_184),
    "mixtral-8x22b": ({"model_type": "mixtral", "hidden_size": 6144, "intermediate_size": 16384, "num_hidden_layers": 56,
                       "num_attention_heads": 48, "num_key_value_heads": 8, "num_local_experts": 8, "vocab_size": 32000},
                      140_620_634_112),
    "mistral-7b-v0.3": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768}, 7_248_023_552),
    "qwen3-32b": ({"model_type": "qwen3", "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                   "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                   "tie_word_embeddings": False}, 32_762_123_264),
    "deepseek-v3": ({"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
                     "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
                     "n_routed_experts": 256, "n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536,
                     "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
                     "vocab_size": 129280}, 671_026_419_200),
}


@pytest.mark.parametrize("name", CASES)
def test_param_count_of_models_outside_the_data(name):
    config, expected = CASES[name]
    assert account(config).param_count == expected


def test_gpt_oss_sliding_layers_and_mxfp4_experts():
    config = dict(CASES["gpt-oss-20b"][0], sliding_window=128, torch_dtype="bfloat16",
                  layer_types=["sliding_attention", "full_attention"] * 12,
                  quantization_config={"quant_method": "mxfp4"})
    s = size_from_config_json(config, max_model_len=4096, max_num_seqs=1)
    experts = 24 * 32 * (2 * 2880 * 2880 + 2880 * 2880)
    dense_bf16 = (20_914_757_184 - experts) * 2
    assert s.weights_bytes == dense_bf16 + experts // 2 + experts // 32
    per_layer = 2 * 8 * 64 * 2
    assert s.kv_bytes == (12 * 4096 + 12 * 128) * per_layer
