"""The seed-compatible sizing catalog (``config/model_sizing_config.yaml``).

Seed schema: a list of entries ``model_id, parameters, memory_gb, quantization,
recommended_partition_gb``. We accept the list at the top level or under ``models:``
(with an optional ``version: v1``), and the seed's other shape: ``models:`` keyed by model id,
with ``quantization`` a list of the variants an entry covers. ``memory_gb`` is the serving
footprint per replica in decimal GB, a MINIMUM (seed 003): when the computed size (weights +
the configured context + overheads) is larger, the computed size is used, and `validate` refuses
an entry below the computed weights or total unless the entry says ``trust_catalog: true``.
``recommended_partition_gb`` is the smallest partition this model should get (a placement
floor, ``min_partition_bytes``).
"""

from __future__ import annotations

from typing import Literal, Union

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SizingEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model_id: str = Field(min_length=1, max_length=4096)
    """Hugging Face id or the model's served name."""
    parameters: Union[int, float, str]
    """Parameter count: 8030261248, 8.03e9 or '8B'."""
    memory_gb: float = Field(gt=0, le=100_000)
    """Total serving memory per replica, decimal GB (1 GB = 1e9 bytes)."""
    quantization: str | None = None
    recommended_partition_gb: float | None = Field(None, gt=0, le=100_000)
    """Smallest partition this model should get, decimal GB."""
    trust_catalog: bool = False
    """Use memory_gb even when it is below the size computed from config.json (weights + context + overheads)."""

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: Union[int, float, str]) -> Union[int, float, str]:
        parameter_count(v)
        return v

    @property
    def parameter_count(self) -> int:
        return parameter_count(self.parameters)

    @property
    def memory_bytes(self) -> int:
        return int(round(self.memory_gb * 1e9))


class SizingCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["v1"] = "v1"
    models: list[SizingEntry] = []

    @model_validator(mode="before")
    @classmethod
    def _seed_shapes(cls, data: Any) -> Any:
        """Models keyed by id, and ``quantization: [null, fp8]`` (one entry per listed variant)."""
        if not isinstance(data, dict):
            return data
        models = data.get("models")
        if isinstance(models, dict):
            models = [{"model_id": k, **(v if isinstance(v, dict) else {"memory_gb": v})} for k, v in models.items()]
        if isinstance(models, list):
            out = []
            for m in models:
                q = m.get("quantization") if isinstance(m, dict) else None
                if isinstance(q, list):
                    out += [{**m, "quantization": v} for v in (q or [None])]
                else:
                    out.append(m)
            data = {**data, "models": out}
        return data

    def find(self, model_id: str, quantization: str | None = None) -> SizingEntry | None:
        """Exact id match; with several entries, the one with the same quantization wins."""
        hits = [e for e in self.models if e.model_id == model_id]
        for e in hits:
            if (e.quantization or None) == (quantization or None):
                return e
        return hits[0] if hits else None


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parameter_count(v: Union[int, float, str]) -> int:
    if isinstance(v, bool):
        raise ValueError("parameters must be a number like 8030261248 or '8B'")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError("parameters must be positive")
        return int(v)
    s = v.strip().lower()
    try:
        if s and s[-1] in _SUFFIX:
            n = float(s[:-1]) * _SUFFIX[s[-1]]
        else:
            n = float(s)
    except ValueError:
        raise ValueError(f"parameters must be a number like 8030261248 or '8B', got {v!r}") from None
    if n <= 0:
        raise ValueError("parameters must be positive")
    return int(n)
