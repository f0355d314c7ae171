"""Parameter accounting from a model's config.json, by architecture rules.

Why tensors and not a parameter count: quantization acts per tensor kind (linear
weights are packed, embeddings/norms/routers are usually not), and tensor
parallelism shards linears but replicates norms. So each architecture rule
returns the list of tensors the checkpoint stores: (kind, rows, cols, count).

Rules cover dense decoders (llama, mistral, qwen2, qwen3, gemma, gemma2, phi3,
falcon incl. multi-query and legacy RW keys, gpt2), MoE (mixtral, qwen2_moe,
qwen3_moe, gpt_oss) and MLA+MoE (deepseek_v2/v3). An unknown llama-shaped
model_type is counted with the llama rule and flagged ``generic``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gpu_sharing.errors import UserError


@dataclass(frozen=True)
class Tensor:
    name: str
    kind: str
    """embed, lm_head, linear, expert, router, norm, bias, buffer."""
    rows: int
    cols: int = 1
    count: int = 1

    @property
    def elements(self) -> int:
        return self.rows * self.cols * self.count


@dataclass
class Accounting:
    tensors: list[Tensor] = field(default_factory=list)
    generic: bool = False

    def add(self, name: str, kind: str, rows: int, cols: int = 1, count: int = 1) -> None:
        if rows and cols and count:
            self.tensors.append(Tensor(name, kind, int(rows), int(cols), int(count)))

    @property
    def param_count(self) -> int:
        return sum(t.elements for t in self.tensors)


class ConfigKeys:
    """Reads config.json keys with aliases; a missing key is a UserError naming it."""

    def __init__(self, config: dict[str, Any], source: str = "config.json"):
        self.c = config
        self.source = source

    def get(self, *names: str, default: Any = ...) -> Any:
        for n in names:
            if n in self.c and self.c[n] is not None:
                return self.c[n]
        if default is ...:
            raise UserError(f"{self.source}: missing key {names[0]!r}" + (f" (or {', '.join(names[1:])})" if names[1:] else "")
                            + f" needed to size model_type {self.c.get('model_type')!r}")
        return default

    def int(self, *names: str, default: Any = ...) -> int:
        v = self.get(*names, default=default)
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"{self.source}: key {names[0]!r} must be a non-negative number, got {v!r}")
        return int(v)


def _attention_llama(a: Accounting, k: ConfigKeys, h: int, *, bias_qkv: bool, bias_o: bool, qk_norm: bool, layers: int) -> None:
    nh = k.int("num_attention_heads", "n_head")
    nkv = k.int("num_key_value_heads", default=nh)
    hd = k.int("head_dim", default=h // nh)
    a.add("q_proj", "linear", nh * hd, h, layers)
    a.add("k_proj", "linear", nkv * hd, h, layers)
    a.add("v_proj", "linear", nkv * hd, h, layers)
    a.add("o_proj", "linear", h, nh * hd, layers)
    if bias_qkv:
        a.add("qkv_bias", "bias", (nh + 2 * nkv) * hd, 1, layers)
    if bias_o:
        a.add("o_bias", "bias", h, 1, layers)
    if qk_norm:
        a.add("qk_norm", "norm", 2 * hd, 1, layers)


def _embeddings(a: Accounting, k: ConfigKeys, h: int, tied_default: bool) -> None:
    v = k.int("vocab_size")
    a.add("embed_tokens", "embed", v, h)
    if not k.get("tie_word_embeddings", default=tied_default):
        a.add("lm_head", "lm_head", v, h)


def _dense(k: ConfigKeys, *, tied_default=False, bias_qkv=None, qk_norm=False, norms_per_layer=2) -> Accounting:
    a = Accounting()
    h = k.int("hidden_size")
    layers = k.int("num_hidden_layers")
    i = k.int("intermediate_size")
    attn_bias = bool(k.get("attention_bias", default=False))
    _attention_llama(a, k, h, bias_qkv=attn_bias if bias_qkv is None else bias_qkv, bias_o=attn_bias and bias_qkv is None,
                     qk_norm=qk_norm, layers=layers)
    a.add("mlp", "linear", 3 * i, h, layers)
    if k.get("mlp_bias", default=False):
        a.add("mlp_bias", "bias", 2 * i + h, 1, layers)
    a.add("layer_norms", "norm", norms_per_layer * h, 1, layers)
    a.add("final_norm", "norm", h)
    _embeddings(a, k, h, tied_default)
    return a


def _llama(k):
    return _dense(k)


def _qwen2(k):
    return _dense(k, bias_qkv=True)


def _qwen3(k):
    return _dense(k, qk_norm=True)


def _gemma(k):
    return _dense(k, tied_default=True)


def _gemma2(k):
    return _dense(k, tied_default=True, norms_per_layer=4)


def _phi3(k):
    return _dense(k)


def _moe_experts(a: Accounting, h: int, experts: int, inter: int, layers: int) -> None:
    a.add("router", "router", experts, h, layers)
    a.add("experts", "expert", 3 * inter, h, experts * layers)


def _mixtral(k: ConfigKeys) -> Accounting:
    a = Accounting()
    h, layers = k.int("hidden_size"), k.int("num_hidden_layers")
    _attention_llama(a, k, h, bias_qkv=False, bias_o=False, qk_norm=False, layers=layers)
    _moe_experts(a, h, k.int("num_local_experts"), k.int("intermediate_size"), layers)
    a.add("layer_norms", "norm", 2 * h, 1, layers)
    a.add("final_norm", "norm", h)
    _embeddings(a, k, h, False)
    return a


def _qwen_moe(k: ConfigKeys, *, qwen3: bool) -> Accounting:
    a = Accounting()
    h, layers = k.int("hidden_size"), k.int("num_hidden_layers")
    _attention_llama(a, k, h, bias_qkv=not qwen3, bias_o=False, qk_norm=qwen3, layers=layers)
    step = k.int("decoder_sparse_step", default=1) or 1
    dense_only = set(k.get("mlp_only_layers", default=[]) or [])
    sparse = [i for i in range(layers) if i not in dense_only and (i + 1) % step == 0]
    n_sparse, n_dense = len(sparse), layers - len(sparse)
    _moe_experts(a, h, k.int("num_experts"), k.int("moe_intermediate_size"), n_sparse)
    shared = k.int("shared_expert_intermediate_size", default=0)
    if shared:
        a.add("shared_expert", "linear", 3 * shared, h, n_sparse)
        a.add("shared_expert_gate", "router", 1, h, n_sparse)
    a.add("dense_mlp", "linear", 3 * k.int("intermediate_size"), h, n_dense)
    a.add("layer_norms", "norm", 2 * h, 1, layers)
    a.add("final_norm", "norm", h)
    _embeddings(a, k, h, False)
    return a


def _deepseek(k: ConfigKeys, *, v3: bool) -> Accounting:
    a = Accounting()
    h, layers, nh = k.int("hidden_size"), k.int("num_hidden_layers"), k.int("num_attention_heads")
    nope, rope, vhd = k.int("qk_nope_head_dim"), k.int("qk_rope_head_dim"), k.int("v_head_dim")
    kv_rank = k.int("kv_lora_rank")
    q_rank = k.get("q_lora_rank", default=None)
    if q_rank:
        a.add("q_a_proj", "linear", q_rank, h, layers)
        a.add("q_a_layernorm", "norm", q_rank, 1, layers)
        a.add("q_b_proj", "linear", nh * (nope + rope), q_rank, layers)
    else:
        a.add("q_proj", "linear", nh * (nope + rope), h, layers)
    a.add("kv_a_proj_with_mqa", "linear", kv_rank + rope, h, layers)
    a.add("kv_a_layernorm", "norm", kv_rank, 1, layers)
    a.add("kv_b_proj", "linear", nh * (nope + vhd), kv_rank, layers)
    a.add("o_proj", "linear", h, nh * vhd, layers)
    dense = min(layers, k.int("first_k_dense_replace", default=0))
    freq = k.int("moe_layer_freq", default=1) or 1
    moe_layers = sum(1 for i in range(dense, layers) if i % freq == 0)
    dense_layers = layers - moe_layers
    experts, moe_i = k.int("n_routed_experts"), k.int("moe_intermediate_size")
    a.add("dense_mlp", "linear", 3 * k.int("intermediate_size"), h, dense_layers)
    _moe_experts(a, h, experts, moe_i, moe_layers)
    if v3 or k.get("topk_method", default="") == "noaux_tc":
        a.add("e_score_correction_bias", "router", experts, 1, moe_layers)
    shared = k.int("n_shared_experts", default=0)
    a.add("shared_experts", "linear", 3 * moe_i * shared, h, moe_layers)
    a.add("layer_norms", "norm", 2 * h, 1, layers)
    a.add("final_norm", "norm", h)
    _embeddings(a, k, h, False)
    return a


def _gpt_oss(k: ConfigKeys) -> Accounting:
    a = Accounting()
    h, layers = k.int("hidden_size"), k.int("num_hidden_layers")
    _attention_llama(a, k, h, bias_qkv=True, bias_o=True, qk_norm=False, layers=layers)
    nh = k.int("num_attention_heads")
    a.add("sinks", "norm", nh, 1, layers)
    e, i = k.int("num_local_experts", "num_experts"), k.int("intermediate_size")
    a.add("router", "router", e, h + 1, layers)
    a.add("experts_gate_up", "expert", 2 * i, h, e * layers)
    a.add("experts_gate_up_bias", "bias", 2 * i, 1, e * layers)
    a.add("experts_down", "expert", h, i, e * layers)
    a.add("experts_down_bias", "bias", h, 1, e * layers)
    a.add("layer_norms", "norm", 2 * h, 1, layers)
    a.add("final_norm", "norm", h)
    _embeddings(a, k, h, False)
    return a


def _falcon(k: ConfigKeys) -> Accounting:
    a = Accounting()
    h = k.int("hidden_size", "n_embed")
    layers = k.int("num_hidden_layers", "n_layer")
    nh = k.int("num_attention_heads", "n_head")
    hd = h // nh
    new_arch = bool(k.get("new_decoder_architecture", default=False))
    if new_arch:
        nkv = k.int("num_kv_heads", "n_head_kv", default=nh)
    elif k.get("multi_query", default=True):
        nkv = 1
    else:
        nkv = nh
    bias = bool(k.get("bias", default=False))
    a.add("query_key_value", "linear", (nh + 2 * nkv) * hd, h, layers)
    a.add("dense", "linear", h, h, layers)
    ffn = k.int("ffn_hidden_size", default=4 * h)
    a.add("mlp", "linear", 2 * ffn, h, layers)
    if bias:
        a.add("biases", "bias", (nh + 2 * nkv) * hd + h + ffn + h, 1, layers)
    n_ln = 2 if new_arch or not k.get("parallel_attn", default=True) else 1
    a.add("layer_norms", "norm", n_ln * 2 * h, 1, layers)
    a.add("ln_f", "norm", 2 * h)
    v = k.int("vocab_size")
    a.add("word_embeddings", "embed", v, h)
    # The Falcon checkpoints store lm_head.weight separately (the index's total_size counts it).
    a.add("lm_head", "lm_head", v, h)
    return a


def _gpt2(k: ConfigKeys) -> Accounting:
    a = Accounting()
    h, layers = k.int("n_embd", "hidden_size"), k.int("n_layer", "num_hidden_layers")
    inner = k.int("n_inner", default=4 * h) or 4 * h
    n_pos = k.int("n_positions", "max_position_embeddings")
    a.add("wte", "embed", k.int("vocab_size"), h)
    a.add("wpe", "embed", n_pos, h)
    a.add("c_attn", "linear", 3 * h, h, layers)
    a.add("c_proj", "linear", h, h, layers)
    a.add("c_fc", "linear", inner, h, layers)
    a.add("mlp_c_proj", "linear", h, inner, layers)
    a.add("biases", "bias", 3 * h + h + inner + h, 1, layers)
    a.add("layer_norms", "norm", 4 * h, 1, layers)
    a.add("ln_f", "norm", 2 * h)
    # The published checkpoint stores each layer's causal-mask buffer attn.bias (n_positions^2),
    # and the Hub's safetensors count includes them: count them as the checkpoint does.
    a.add("attn.bias (causal mask buffer)", "buffer", n_pos, n_pos, layers)
    return a


RULES: dict[str, Callable[[ConfigKeys], Accounting]] = {
    "llama": _llama, "mistral": _llama, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma, "gemma2": _gemma2,
    "phi3": _phi3, "falcon": _falcon, "RefinedWeb": _falcon, "RefinedWebModel": _falcon, "gpt2": _gpt2,
    "mixtral": _mixtral, "qwen2_moe": lambda k: _qwen_moe(k, qwen3=False), "qwen3_moe": lambda k: _qwen_moe(k, qwen3=True),
    "deepseek_v2": lambda k: _deepseek(k, v3=False), "deepseek_v3": lambda k: _deepseek(k, v3=True), "gpt_oss": _gpt_oss,
}
LLAMA_SHAPED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def account(config: dict[str, Any], source: str = "config.json") -> Accounting:
    """Tensors of the checkpoint described by ``config``; raises UserError on unknown/incomplete configs."""
    k = ConfigKeys(config, source)
    mt = config.get("model_type")
    if mt is None and any("RWForCausalLM" in a for a in config.get("architectures", []) or []):
        mt = "falcon"
    if mt in RULES:
        return RULES[mt](k)
    if mt is None:
        raise UserError(f"{source}: missing key 'model_type'; known: {', '.join(sorted(RULES))}")
    if all(key in config for key in LLAMA_SHAPED_KEYS):
        acc = _llama(k)
        acc.generic = True
        return acc
    raise UserError(f"{source}: unknown model_type {mt!r}; known: {', '.join(sorted(RULES))} "
                    f"(or a llama-shaped config with {', '.join(LLAMA_SHAPED_KEYS)})")
