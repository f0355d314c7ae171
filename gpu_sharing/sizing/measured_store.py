"""Measured sizes: VRAM per rank recorded from running instances, the most trusted source.

The runtime records what amd-smi reports for an instance once it is READY; the
next plan for the same model and sizing-relevant options uses it instead of an
estimate. Stored as JSON in the state directory (explicit loader/saver: the rest
of the sizing layer stays pure).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIZING_FIELDS = ("source", "revision", "config_json", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                 "dtype", "quantization", "kv_cache_dtype", "kv_cache_bytes", "enforce_eager", "lora", "speculative")


def measured_key(model: Any, *, tp: int) -> str:
    """Fingerprint of everything that changes an instance's memory: model, options, tp."""
    data = {f: _plain(getattr(model, f, None)) for f in SIZING_FIELDS}
    data["tp"] = tp
    blob = json.dumps(data, sort_keys=True, default=str)
    return f"{getattr(model, 'source', '?')}@tp{tp}:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(v: Any) -> Any:
    return v.model_dump(mode="json") if hasattr(v, "model_dump") else v


@dataclass
class MeasuredSizes:
    entries: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> "MeasuredSizes":
        try:
            data = json.loads(Path(path).read_text())
            entries = {str(k): int(v) for k, v in data.get("sizes", {}).items() if isinstance(v, (int, float))}
            return cls(entries)
        except (OSError, ValueError, AttributeError):
            return cls()  # missing or corrupt: measured sizes are an optimisation, never fatal

    def get(self, key: str) -> int | None:
        return self.entries.get(key)

    def record(self, key: str, bytes_per_rank: int) -> None:
        self.entries[key] = int(bytes_per_rank)

    def save(self, path: Path | str) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "sizes": self.entries}, indent=1, sort_keys=True))
        os.chmod(tmp, 0o640)
        os.replace(tmp, p)

    key_for = staticmethod(measured_key)
