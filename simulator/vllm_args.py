"""argv parsing for the fake ``vllm serve``: every 0.33.0 flag accepted, anything else refused.

vLLM's parser is argparse with ~400 options; we accept exactly the same flag
names (gpu_sharing/data/vllm-0.33.0-serve-flags.txt) and keep the values of the
ones the fake acts on. An unknown flag exits 2 with argparse's message, like vLLM.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources

BOOLEAN_FLAGS = {"--enforce-eager", "--enable-lora", "--trust-remote-code", "--disable-log-stats",
                 "--enable-prefix-caching", "--disable-log-requests", "--enable-sleep-mode"}


def known_flags() -> frozenset[str]:
    text = resources.files("gpu_sharing.data").joinpath("vllm-0.33.0-serve-flags.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip().startswith("-"))


@dataclass
class ServeArgs:
    model: str
    host: str | None = None
    port: int = 8000
    served_model_names: list[str] = field(default_factory=list)
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.92
    kv_cache_memory_bytes: int | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    raw: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return self.served_model_names or [self.model]


def _usage_error(msg: str) -> None:
    print("usage: vllm serve [model_tag] [options]", file=sys.stderr)
    print(f"vllm serve: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse_bytes(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    t = text.strip().lower()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(float(t))


def parse_serve_args(argv: list[str]) -> ServeArgs:
    if argv and argv[0] == "serve":
        argv = argv[1:]
    flags = known_flags()
    model: str | None = None
    raw: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-") and not _is_number(tok):
            name, _, inline = tok.partition("=")
            if name == "-tp":
                name = "--tensor-parallel-size"
            if name not in flags:
                _usage_error(f"unrecognized arguments: {tok}")
            values = [inline] if inline else []
            i += 1
            if not inline and name not in BOOLEAN_FLAGS and not name.startswith("--no-"):
                while i < len(argv) and (not argv[i].startswith("-") or _is_number(argv[i])):
                    values.append(argv[i])
                    i += 1
            raw.setdefault(name, []).extend(values)
            continue
        if model is None:
            model = tok
            i += 1
            continue
        _usage_error(f"unrecognized arguments: {tok}")
    if model is None:
        model = (raw.get("--model") or [None])[0]
    if not model:
        _usage_error("the following arguments are required: model_tag")
    return _typed(model, raw)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def _one(raw: dict[str, list[str]], flag: str) -> str | None:
    v = raw.get(flag)
    if v is None:
        return None
    if len(v) != 1:
        _usage_error(f"argument {flag}: expected one argument")
    return v[0]


def _typed(model: str, raw: dict[str, list[str]]) -> ServeArgs:
    a = ServeArgs(model=model, raw=raw)
    try:
        a.host = _one(raw, "--host")
        a.port = int(_one(raw, "--port") or 8000)
        a.served_model_names = list(raw.get("--served-model-name", []))
        a.tensor_parallel_size = int(_one(raw, "--tensor-parallel-size") or 1)
        mml = _one(raw, "--max-model-len")
        a.max_model_len = None if mml in (None, "auto", "-1") else parse_bytes(mml.replace("k", "000").replace("K", "000")) if mml else None
        a.gpu_memory_utilization = float(_one(raw, "--gpu-memory-utilization") or 0.92)
        kv = _one(raw, "--kv-cache-memory-bytes")
        a.kv_cache_memory_bytes = parse_bytes(kv) if kv else None
        mns = _one(raw, "--max-num-seqs")
        a.max_num_seqs = int(mns) if mns else None
        a.enforce_eager = "--enforce-eager" in raw
    except ValueError as e:
        _usage_error(f"invalid value: {e}")
    if not 0 < a.gpu_memory_utilization <= 1:
        _usage_error(f"argument --gpu-memory-utilization: must be in (0, 1], got {a.gpu_memory_utilization}")
    return a
