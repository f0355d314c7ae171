"""A small config and fleet for the fleet tests: sizes from inline config.json, no hub access."""

from __future__ import annotations

import yaml

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "max_position_embeddings": 32768}
LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "max_position_embeddings": 131072}

CONFIG = {
    "version": "v1",
    "models": [
        {"name": "Qwen2.5_0.5B", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN_05B, "replicas": 3,
         "priority": 5, "max_model_len": 4096, "revision": "a1b2c3d", "env": {"VLLM_ROCM_USE_AITER": "1"}},
        {"name": "llama-3.1-8b", "source": "meta-llama/Llama-3.1-8B-Instruct", "config_json": LLAMA_8B,
         "replicas": 2, "priority": 50, "max_model_len": 32768, "max_num_seqs": 8},
    ],
}

FLEET = {
    "version": "v1",
    "pools": [{"name": "mi300x", "gpu_model": "MI300X", "gpus_per_node": 2, "node_names": ["n-1", "n-2"],
               "profile": "CPX+NPS4"},
              {"name": "mi355x", "gpu_model": "MI355X", "gpus_per_node": 1, "nodes": 1, "profile": "CPX+NPS1"}],
    "planner": {"time_budget_s": 5},
}


def write(tmp_path, config=None, fleet=None):
    cfg, flt = tmp_path / "gpu-sharing.yaml", tmp_path / "fleet.yaml"
    cfg.write_text(yaml.safe_dump(config or CONFIG))
    flt.write_text(yaml.safe_dump(fleet or FLEET))
    return cfg, flt
