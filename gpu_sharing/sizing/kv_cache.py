"""KV cache bytes per token per tensor-parallel rank, the way vLLM 0.33 allocates it.

vllm/v1/kv_cache_interface.py and vllm/config/model.py get_num_kv_heads:
  full attention:  2 x layers x max(1, kv_heads // tp) x head_dim x dtype_bytes
  (heads are replicated when tp > kv_heads);
  multi-query (falcon multi_query): 1 KV head;
  MLA (deepseek_v2/v3): layers x (kv_lora_rank + qk_rope_head_dim) x dtype_bytes, NOT divided by tp;
  sliding-window layers hold at most ``window`` tokens (gemma2 alternates sliding and
  global layers, gpt-oss lists ``layer_types``, mistral v0.1 and phi3 slide on every layer;
  qwen2 with use_sliding_window false does not slide).
Allocation is in blocks of ``block_size`` tokens (default 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpu_sharing.sizing.architectures import ConfigKeys

KV_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


@dataclass(frozen=True)
class KvLayout:
    full_layers: int
    sliding_layers: int
    window: int | None
    bytes_per_token_per_layer: int
    """Per rank."""

    @property
    def bytes_per_token(self) -> int:
        return (self.full_layers + self.sliding_layers) * self.bytes_per_token_per_layer

    def bytes_for(self, context_tokens: int, sequences: int, block_size: int = 16) -> int:
        """KV bytes for ``sequences`` sequences of ``context_tokens`` each, block-rounded."""
        blocks_full = math.ceil(context_tokens / block_size)
        slide_tokens = min(context_tokens, self.window) if self.window else context_tokens
        blocks_slide = math.ceil(slide_tokens / block_size)
        per_seq = (self.full_layers * blocks_full + self.sliding_layers * blocks_slide) * block_size
        return per_seq * sequences * self.bytes_per_token_per_layer


def kv_layout(config: dict[str, Any], *, tp: int = 1, dtype_bytes: int = 2, source: str = "config.json") -> KvLayout:
    k = ConfigKeys(config, source)
    mt = config.get("model_type")
    layers = k.int("num_hidden_layers", "n_layer")
    if mt in ("deepseek_v2", "deepseek_v3"):
        per_layer = (k.int("kv_lora_rank") + k.int("qk_rope_head_dim")) * dtype_bytes
        return KvLayout(layers, 0, None, per_layer)
    h = k.int("hidden_size", "n_embd", "n_embed")
    nh = k.int("num_attention_heads", "n_head")
    hd = k.int("head_dim", default=h // nh)
    if mt in ("falcon", "RefinedWeb", "RefinedWebModel") or (mt is None and "n_head" in config and "multi_query" in config):
        if k.get("new_decoder_architecture", default=False):
            nkv = k.int("num_kv_heads", "n_head_kv", default=nh)
        else:
            nkv = 1 if k.get("multi_query", default=True) else nh
    else:
        nkv = k.int("num_key_value_heads", default=nh)
    per_layer = 2 * max(1, nkv // tp) * hd * dtype_bytes
    window, sliding = _sliding(config, layers)
    return KvLayout(layers - sliding, sliding, window, per_layer)


def _sliding(config: dict[str, Any], layers: int) -> tuple[int | None, int]:
    window = config.get("sliding_window")
    if not window or config.get("use_sliding_window") is False:
        return None, 0
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        return int(window), sum(1 for t in types if t == "sliding_attention")
    if config.get("model_type") == "gemma2":
        return int(window), (layers + 1) // 2  # even layers slide, odd layers are global
    return int(window), layers
