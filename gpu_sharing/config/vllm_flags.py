"""vLLM 0.33.0's `vllm serve` flags as data, and the one encoder of config values into argv.

Why one encoder: the config schema (validate, exit 2), the launch builder and the fake vLLM
must agree with vLLM's own argparse parser on every flag. gpu_sharing/data/vllm_serve_flags.json
is generated from that parser (scripts/gen_vllm_flags.py, vllm/entrypoints/common/cli_args.py:431
make_arg_parser): type, choices, nargs/action and negation form of each flag, the
device-dependent batch defaults, ROCm's quantization list.

Encoding, the way the parser reads it:
- enable/disable pairs (``EnableDisableAction``, e.g. --enable-prefix-caching /
  --disable-prefix-caching, vllm/engine/arg_utils.py) and ``--X``/``--no-X`` pairs: True gives
  the positive form, False the negation, so ``enable-prefix-caching: false`` turns it off;
- store_true flags: True gives the flag, False nothing (their default is off);
- ``append`` flags (--middleware): the flag is repeated once per value;
- nargs ``+``/``*`` flags (--served-model-name, --lora-modules): one flag, several values;
- JSON-typed flags (--allowed-origins, --compilation-config, ...): one JSON argument;
- choices are checked; ints and floats are checked by type.
No value may start with ``-`` (argparse would read it as another flag: ``--host`` injection).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

MANAGED_FLAGS = frozenset({
    "host", "port", "served-model-name", "tensor-parallel-size", "max-model-len", "max-num-seqs",
    "gpu-memory-utilization", "device-memory-utilization", "kv-cache-memory-bytes", "dtype", "quantization",
    "kv-cache-dtype", "max-num-batched-tokens", "enforce-eager", "no-enforce-eager", "revision",
    "trust-remote-code", "no-trust-remote-code", "enable-lora", "disable-lora", "max-loras", "max-lora-rank",
    "lora-modules", "speculative-config", "model",
})
"""Flags that come from the model's own keys or the placement (the launch contract); setting them in
vllm_args would duplicate or contradict what was sized."""

JSON_TYPES = ("json", "parse_dataclass", "union_dict_and_str", "_parse_type")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_HUMAN_INT = re.compile(r"^\d+(\.\d+)?[kKmMgGtT]?$")


@dataclass(frozen=True)
class FlagInfo:
    flag: str
    """Primary long form, e.g. --enable-prefix-caching."""
    action: str
    type: str | None
    choices: tuple[Any, ...] | None
    nargs: Any
    negation: str | None


@lru_cache(maxsize=1)
def metadata() -> dict[str, Any]:
    return json.loads(resources.files("gpu_sharing.data").joinpath("vllm_serve_flags.json").read_text())


def all_flag_names() -> frozenset[str]:
    return frozenset(metadata()["flags"])


def flag_info(name: str) -> tuple[FlagInfo, bool] | None:
    """(the flag's primary entry, True if ``name`` is its negation form); None when vLLM has no such flag."""
    flags = metadata()["flags"]
    entry = flags.get(name)
    if entry is None:
        return None
    negated = "negation_of" in entry
    primary = entry.get("negation_of") or entry.get("alias_of") or name
    e = flags[primary]
    choices = tuple(e["choices"]) if e.get("choices") is not None else None
    return FlagInfo(primary, e["action"], e.get("type"), choices, e.get("nargs"), e.get("negation")), negated


def rocm_quantizations() -> tuple[str, ...]:
    """vllm/platforms/rocm.py:668 RocmPlatform.supported_quantization."""
    return tuple(metadata()["rocm_supported_quantization"])


def choices_of(flag: str) -> tuple[Any, ...] | None:
    info = flag_info(flag)
    return info[0].choices if info else None


def batch_defaults(device_total_bytes: int, device_name: str = "amd instinct") -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM 0.33 picks for `vllm serve` when unset, by the device's
    total memory (vllm/engine/arg_utils.py:2973-3006): >= 160 GiB 16384/1024; >= 70 GiB and not A100 8192/1024;
    else 2048/256."""
    gib = 1024**3
    if device_total_bytes >= 160 * gib:
        return 16384, 1024
    if device_total_bytes >= 70 * gib and "a100" not in device_name.lower():
        return 8192, 1024
    return 2048, 256


def _scalar_text(value: Any, info: FlagInfo, where: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{where}: {info.flag} takes a value, not true/false")
    if isinstance(value, (dict, list)):
        raise ValueError(f"{where}: {info.flag} takes one value, got {type(value).__name__}")
    text = str(value)
    t = (info.type or "").removeprefix("optional[").removesuffix("]")
    if t == "int" and not re.match(r"^-?\d+$", text):
        raise ValueError(f"{where}: {info.flag} takes an integer, got {value!r}")
    if t in ("human_readable_int", "human_readable_int_or_auto") and not (
            _HUMAN_INT.match(text) or (t.endswith("_or_auto") and text in ("auto", "-1"))):
        raise ValueError(f"{where}: {info.flag} takes an integer like 4096 or 4k, got {value!r}")
    if t == "float":
        try:
            if not math.isfinite(float(text)):
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}: {info.flag} takes a number, got {value!r}") from None
    if info.choices is not None:
        allowed = [str(c) for c in info.choices]
        if text not in allowed:
            raise ValueError(f"{where}: {value!r} is not allowed for {info.flag}; allowed: {', '.join(allowed)}")
    if text.startswith("-") and not _NUMBER.match(text):
        raise ValueError(f"{where}: value {text!r} starts with '-' and would be read as another vLLM flag")
    if "\x00" in text:
        raise ValueError(f"{where}: value contains a NUL byte")
    return text


def encode(key: str, value: Any, where: str) -> list[str]:
    """argv words for ``vllm_args: {key: value}``; ValueError naming ``where`` and what is allowed."""
    name = f"--{key}"
    found = flag_info(name)
    if found is None:
        raise ValueError(f"{where}: --{key} is not a vLLM {metadata()['vllm_version']} `vllm serve` flag")
    info, negated = found
    if value is None:
        return []
    if info.action in ("enable_disable", "boolean_optional", "store_true", "store_false"):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: --{key} is a switch; use true or false, got {value!r}")
        on = value != negated  # `disable-x: true` means off
        if info.action in ("store_true", "store_false"):
            return [info.flag] if value else []
        if on:
            return [info.flag]
        return [info.negation] if info.negation else []
    t = (info.type or "").removeprefix("optional[").removesuffix("]")
    if t in JSON_TYPES and isinstance(value, (dict, list)):
        return [info.flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
    if t in JSON_TYPES and t == "json" and isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            raise ValueError(f"{where}: --{key} takes JSON, e.g. [\"https://a.example\"], got {value!r}") from None
        return [info.flag, value]
    values = value if isinstance(value, list) else [value]
    if info.action == "append":
        out: list[str] = []
        for v in values:
            out += [info.flag, _scalar_text(v, info, where)]
        return out
    if info.nargs in ("+", "*") or isinstance(info.nargs, int) and info.nargs > 1:
        if not values and info.nargs == "+":
            raise ValueError(f"{where}: --{key} needs at least one value")
        return [info.flag, *[_scalar_text(v, info, where) for v in values]]
    if isinstance(value, list):
        raise ValueError(f"{where}: --{key} takes one value, not a list")
    return [info.flag, _scalar_text(value, info, where)]


def check_vllm_args(args: dict[str, Any], where: str) -> None:
    """Validate-time check of a vllm_args mapping: known flag, not managed, value encodable."""
    for key, value in args.items():
        if key in MANAGED_FLAGS:
            raise ValueError(f"{where}.{key}: --{key} is set by gpu-sharing from the model's keys and the placement; "
                             "use the model's own key instead")
        encode(key, value, f"{where}.{key}")
