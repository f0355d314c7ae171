"""Value types of the sizing layer (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_sharing.sizing.contract import LaunchContract


class SizeSource(str, Enum):
    """Where a size came from, most trusted first."""

    MEASURED = "measured"
    """Recorded from a running instance with the same model and options."""
    CATALOG = "catalog"
    """config/model_sizing_config.yaml (seed schema)."""
    CONFIG_JSON = "config-json"
    """Computed by architecture rules from the model's config.json."""
    ESTIMATE_GENERIC = "estimate-generic"
    """Unknown but llama-shaped architecture: estimated, with a warning."""


@dataclass(frozen=True)
class ModelSize:
    """Memory needed per tensor-parallel rank, with its breakdown.

    total_bytes_per_rank = weights_bytes_per_rank + kv_bytes + activation_bytes
                           + runtime_overhead_bytes
    """

    param_count: int
    weights_bytes: int
    """All weights of the model (every rank together)."""
    weights_bytes_per_rank: int
    kv_bytes_per_token: int
    """Per rank, as vLLM allocates it."""
    kv_tokens: int
    kv_bytes: int
    """Per rank: KV pool for the configured context x sequences (block-rounded), or the fixed pool."""
    activation_bytes: int
    runtime_overhead_bytes: int
    total_bytes_per_rank: int
    tp: int
    source: SizeSource
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """Where each constant came from, for the human breakdown."""
    contract: "LaunchContract | None" = None
    """Every number this size assumed (context, sequences, batched tokens, budget split); the launch
    passes exactly these to vLLM. None only for a catalog or measured size without a config.json."""

    @property
    def overhead_bytes(self) -> int:
        return self.activation_bytes + self.runtime_overhead_bytes
