"""argv parsing for the fake ``vllm serve``, driven by vLLM 0.33.0's own parser metadata.

gpu_sharing/data/vllm_serve_flags.json is generated from vLLM's parser
(vllm/entrypoints/common/cli_args.py:431 make_arg_parser; scripts/gen_vllm_flags.py): the fake
accepts exactly those flag names and reads each the way argparse does (switch pairs such as
--enable-prefix-caching/--disable-prefix-caching, nargs '+', append, JSON and int types,
choices). A bad flag or value exits 2 with argparse's message, like vLLM.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def metadata() -> dict[str, Any]:
    """Read directly (not through gpu_sharing.config): the fake starts once per instance and must start fast."""
    return json.loads(resources.files("gpu_sharing.data").joinpath("vllm_serve_flags.json").read_text())


def known_flags() -> frozenset[str]:
    return frozenset(metadata()["flags"])


@dataclass
class ServeArgs:
    model: str
    host: str | None = None
    port: int = 8000
    served_model_names: list[str] = field(default_factory=list)
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    """None: unset or auto (vLLM uses the model's maximum, or fits it with auto)."""
    max_model_len_auto: bool = False
    gpu_memory_utilization: float = 0.92
    kv_cache_memory_bytes: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    enforce_eager: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    """Every parsed flag by its dest, as argparse would store it."""
    raw: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return self.served_model_names or [self.model]


def _usage_error(msg: str) -> None:
    print("usage: vllm serve [model_tag] [options]", file=sys.stderr)
    print(f"vllm serve: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def human_readable_int(text: str) -> int:
    """vllm/utils/argparse_utils.py:30: '1k' = 1000, '1K' = 1024."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text.strip())
    if m:
        number, suffix = m.groups()
        if suffix.islower():
            return int(float(number) * {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[suffix])
        return int(number) * {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[suffix]
    return int(text)


def parse_bytes(text: str) -> int:
    """--kv-cache-memory-bytes accepts human-readable sizes like 4G (binary) or 4g (decimal)."""
    return human_readable_int(text)


def _index() -> dict[str, tuple[str, bool]]:
    """Every option string -> (primary flag, is-negation)."""
    flags = metadata()["flags"]
    out: dict[str, tuple[str, bool]] = {}
    for name, e in flags.items():
        if "negation_of" in e:
            out[name] = (e["negation_of"], True)
        elif "alias_of" in e:
            out[name] = (e["alias_of"], False)
        else:
            out[name] = (name, False)
            for alias in e.get("aliases") or []:
                out[alias] = (name, False)
    return out


def _convert(flag: str, entry: dict[str, Any], text: str) -> Any:
    t = (entry.get("type") or "str").removeprefix("optional[").removesuffix("]")
    if entry.get("type", "").startswith("optional[") and text in ("", "None"):
        return None
    try:
        if t == "int":
            value: Any = int(text)
        elif t == "float":
            value = float(text)
        elif t == "human_readable_int":
            value = human_readable_int(text)
        elif t == "human_readable_int_or_auto":
            value = -1 if text.lower() in ("auto", "-1") else human_readable_int(text)
        elif t == "json":
            value = json.loads(text)
        else:
            value = text
    except ValueError:
        _usage_error(f"argument {flag}: invalid {t} value: {text!r}")
    choices = entry.get("choices")
    if choices is not None and value not in choices:
        _usage_error(f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(map(str, choices))})")
    return value


def _is_number(tok: str) -> bool:
    return bool(re.fullmatch(r"-\d+(\.\d+)?", tok))


def parse_serve_args(argv: list[str]) -> ServeArgs:
    if argv and argv[0] == "serve":
        argv = argv[1:]
    flags, index = metadata()["flags"], _index()
    model: str | None = None
    values: dict[str, Any] = {}
    raw: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("-") or _is_number(tok):
            if model is None:
                model = tok
                continue
            _usage_error(f"unrecognized arguments: {tok}")
        name, eq, inline = tok.partition("=")
        if name not in index:
            _usage_error(f"unrecognized arguments: {tok}")
        primary, negated = index[name]
        entry = flags[primary]
        dest, action, nargs = entry["dest"], entry["action"], entry.get("nargs")
        if action in ("enable_disable", "boolean_optional", "store_true", "store_false"):
            if eq:
                _usage_error(f"argument {name}: ignored explicit argument {inline!r}")
            values[dest] = (not negated) if action != "store_false" else False
            raw.setdefault(primary, [])
            continue
        words = [inline] if eq else []
        if not eq:
            while i < len(argv) and (not argv[i].startswith("-") or _is_number(argv[i])):
                words.append(argv[i])
                i += 1
                if nargs not in ("+", "*"):
                    break
        if not words and nargs != "*":
            _usage_error(f"argument {name}: expected {'at least one argument' if nargs == '+' else 'one argument'}")
        raw.setdefault(primary, []).extend(words)
        converted = [_convert(name, entry, w) for w in words]
        if action == "append":
            values.setdefault(dest, []).extend(converted)
        elif nargs in ("+", "*") or action == "LoRAParserAction":
            values[dest] = converted
        else:
            values[dest] = converted[0]
    model = model or values.get("model")
    if not model:
        _usage_error("the following arguments are required: model_tag")
    return _typed(model, values, raw)


def _typed(model: str, v: dict[str, Any], raw: dict[str, list[str]]) -> ServeArgs:
    mml = v.get("max_model_len")
    a = ServeArgs(model=model, values=v, raw=raw)
    a.host = v.get("host")
    a.port = int(v.get("port") or 8000)
    a.served_model_names = list(v.get("served_model_name") or [])
    a.tensor_parallel_size = int(v.get("tensor_parallel_size") or 1)
    a.max_model_len = None if mml in (None, -1) else int(mml)
    a.max_model_len_auto = mml == -1
    a.gpu_memory_utilization = float(v["gpu_memory_utilization"]) if v.get("gpu_memory_utilization") else 0.92
    kv = v.get("kv_cache_memory_bytes")
    a.kv_cache_memory_bytes = parse_bytes(str(kv)) if kv else None
    a.max_num_seqs = v.get("max_num_seqs")
    a.max_num_batched_tokens = v.get("max_num_batched_tokens")
    a.kv_cache_dtype = v.get("kv_cache_dtype") or "auto"
    a.block_size = v.get("block_size")
    a.enforce_eager = bool(v.get("enforce_eager"))
    if not 0 < a.gpu_memory_utilization <= 1:
        _usage_error(f"argument --gpu-memory-utilization: must be in (0, 1], got {a.gpu_memory_utilization}")
    return a
