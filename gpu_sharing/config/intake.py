"""Safe intake of files a user or a model hub hands us: bounded reads, and config.json numbers checked.

Why: a file path in a config or on the command line may name ``/dev/zero``, a FIFO
or a 40 GB file; ``stat().st_size`` says 0 for the first two, so every read here is
bounded by reading at most ``limit + 1`` bytes. And a config.json is data from the
internet: ``num_attention_heads: 0`` or ``NaN`` passed validation and crashed every
reconcile pass with ZeroDivisionError. The sizing formulas divide by heads and
multiply layers, widths and vocab sizes, so those must be positive integers and
every number must be finite and of a sane magnitude. Errors name the file and the
key, never the file's content (a path like ``/etc/shadow`` must not leak a line).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gpu_sharing.errors import UserError

CONFIG_JSON_MAX_BYTES = 8 * 1024 * 1024
TOKEN_MAX_BYTES = 4096
MAX_NESTING = 32
MAX_NUMBER = 2.0 ** 53
"""Larger magnitudes are not a model dimension (and lose integer precision as floats)."""

POSITIVE_INT_KEYS = frozenset({
    "num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "hidden_size", "n_embd", "d_model",
    "num_hidden_layers", "n_layer", "num_layers", "intermediate_size", "vocab_size", "head_dim",
    "num_local_experts", "num_experts", "moe_intermediate_size", "kv_lora_rank", "sliding_window",
    "max_position_embeddings", "num_experts_per_tok", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"})
"""Keys the sizing formulas divide or multiply by (sizing/architectures.py, kv_cache.py); absent is fine,
present must be a positive integer. ``sliding_window`` may also be null (checked only when a number)."""


def read_bounded(path: str | os.PathLike[str], limit_bytes: int, what: str) -> bytes:
    """At most limit_bytes of the file; UserError naming the path (not the content) otherwise."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(limit_bytes + 1)
    except FileNotFoundError:
        raise UserError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{p}: {what} is a directory, expected a file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read the {what}: {e.strerror or type(e).__name__}") from None
    if len(data) > limit_bytes:
        raise UserError(f"{p}: {what} is larger than {limit_bytes} bytes (limit); refusing to read it")
    return data


def hf_config_problems(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, what is wrong) for every bad number in a config.json object."""
    problems: list[tuple[str, str]] = []
    _walk(data, prefix, problems, 0)
    return problems


def _walk(value: Any, key: str, problems: list[tuple[str, str]], depth: int) -> None:
    if depth > MAX_NESTING:
        problems.append((key, f"nested deeper than {MAX_NESTING} levels"))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if str(k) in POSITIVE_INT_KEYS and v is not None:
                msg = _positive_int_problem(v)
                if msg:
                    problems.append((sub, msg))
                    continue
            _walk(v, sub, problems, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value[:4096]):
            _walk(v, f"{key}[{i}]", problems, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append((key, f"must be a finite number (got {value})"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        problems.append((key, f"magnitude over {MAX_NUMBER:.0f} is not a model dimension"))


def _positive_int_problem(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a positive integer (got a {type(v).__name__})"
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return f"must be a positive integer (got {v})"
    if v <= 0 or v > MAX_NUMBER:
        return f"must be a positive integer up to {MAX_NUMBER:.0f} (got {int(v)})"
    return ""


def check_hf_config(data: Any, source: str) -> None:
    """UserError naming the source and every bad key; the sizing formulas are safe after this."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: config.json must be a JSON object")
    problems = hf_config_problems(data)
    if problems:
        shown = "; ".join(f"{k}: {m}" for k, m in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(f"{source}: invalid config.json: {shown}{more}")


class SettleWatch:
    """Accept a changed file signature only after it stayed the same for ``settle_s`` (the caller's clock).

    Why: editors and ``cp`` rewrite in place, in several writes; a watcher that reloads on the first
    change applies a half-written file (two models removed, then re-added: every instance restarted)."""

    def __init__(self, applied: object, settle_s: float):
        self.applied = applied
        self.settle_s = settle_s
        self._pending: object = None
        self._since = 0.0

    def ready(self, signature: object, now: float) -> bool:
        """True when ``signature`` differs from the applied one and has been stable for settle_s."""
        if signature == self.applied:
            self._pending = None
            return False
        if signature != self._pending:
            self._pending, self._since = signature, now
        return now - self._since >= self.settle_s

    def accept(self, signature: object) -> None:
        self.applied = signature
        self._pending = None


__all__ = ["SettleWatch", "CONFIG_JSON_MAX_BYTES", "TOKEN_MAX_BYTES", "check_hf_config", "hf_config_problems", "read_bounded"]
