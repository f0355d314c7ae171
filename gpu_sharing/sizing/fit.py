"""Fit tables: for every GPU model and compute mode, does a size fit a partition, and with how much room.

Pure: takes a callable tp -> per-rank bytes, so any size source works.
"""

from __future__ import annotations

from typing import Any, Callable

from gpu_sharing.hardware.catalog import CATALOG


def fit_table(per_rank_bytes: Callable[[int], int], *, tp: int = 1, headroom_fraction: float = 0.03) -> list[dict[str, Any]]:
    rows = []
    need = per_rank_bytes(tp)
    for spec in CATALOG.values():
        smallest = None
        for mode in sorted(spec.compute_modes(), key=lambda c: -spec.partitions(c)):
            cap = int(spec.vram_per_partition_bytes(mode) * (1 - headroom_fraction))
            rows.append({"gpu_model": spec.name, "compute_partition": mode.value, "partitions": spec.partitions(mode),
                         "partition_bytes": spec.vram_per_partition_bytes(mode), "fits": need <= cap,
                         "room_bytes": cap - need, "tp": tp})
            if need <= cap and smallest is None:
                smallest = mode.value
        for r in rows:
            if r["gpu_model"] == spec.name:
                r["smallest_mode_that_fits"] = smallest
    return rows


def max_model_len_that_fits(size_at: Callable[[int], int], partition_bytes: int, *, headroom_fraction: float = 0.03,
                            upper: int = 1 << 21) -> int:
    """Largest max_model_len (multiple of 16) whose per-rank total fits, like vLLM's --max-model-len auto; 0 if none."""
    cap = int(partition_bytes * (1 - headroom_fraction))
    lo, hi = 0, upper // 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size_at(mid * 16) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return lo * 16
