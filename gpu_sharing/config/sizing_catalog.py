"""The seed-compatible sizing catalog (``config/model_sizing_config.yaml``).

Seed schema: a list of entries ``model_id, parameters, memory_gb, quantization,
recommended_partition_gb``. We accept the list at the top level or under ``models:``
(with an optional ``version: v1``). ``memory_gb`` is the serving footprint per
replica in decimal GB (weights + KV + overhead) as the operator measured or chose it.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
