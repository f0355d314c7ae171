"""The vLLM flags gpu-sharing generates for a config, and the flag metadata they are checked against.

Why one small function for the metadata: issue 15 ships ``gpu_sharing/data/vllm_serve_flags.json``
(flag metadata with types, choices, negations, aliases); until it is on this branch the doctor reads
the flag names of ``vllm-0.33.0-serve-flags.txt``. ``serve_flags()`` is the one place that switches:
it uses the JSON as soon as the file exists.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec, vllm_flags

METADATA_JSON = "vllm_serve_flags.json"
GIB = 1024**3


@lru_cache(maxsize=1)
def serve_flags() -> frozenset[str]:
    """``--flag`` names vLLM 0.33.0's ``vllm serve`` accepts, from the richest metadata shipped."""
    data = resources.files("gpu_sharing.data")
    if data.joinpath(METADATA_JSON).is_file():
        return flags_from_metadata(json.loads(data.joinpath(METADATA_JSON).read_text()))
    return vllm_flags()


def flags_from_metadata(meta: dict[str, Any]) -> frozenset[str]:
    """Flag names, negations (``--no-X``) and aliases from ``{"flags": {"--name": {"negation", "aliases"}}}``
    (issue 15's vllm_serve_flags.json, generated from vLLM 0.33.0's own parser)."""
    names: set[str] = set()
    for flag, info in (meta.get("flags") or {}).items():
        names.add(flag)
        info = info if isinstance(info, dict) else {}
        if info.get("negation"):
            names.add(info["negation"])
        names.update(a for a in info.get("aliases") or [] if str(a).startswith("--"))
    return frozenset(names)


def metadata_source() -> str:
    data = resources.files("gpu_sharing.data")
    name = METADATA_JSON if data.joinpath(METADATA_JSON).is_file() else "vllm-0.33.0-serve-flags.txt"
    return f"gpu_sharing/data/{name}"


def probe_partition(hip_index: int = 0, cu_count: int = 304, xcc_count: int = 8,
                    vram_total_bytes: int = 192 * GIB) -> LogicalPartition:
    return LogicalPartition(gpu=0, index=0, hip_index=hip_index, render_node=f"renderD{128 + hip_index}",
                            cu_count=cu_count, xcc_count=xcc_count, vram_total_bytes=vram_total_bytes, vram_used_bytes=0)


def generated_flags(cfg: Config) -> dict[str, list[str]]:
    """``--flag`` names in each enabled model's ``vllm serve`` argv, as the launch contract builds it.

    A model whose argv cannot be built (a vllm_args key vLLM 0.33 lacks) is listed with the error
    text as its only entry, so the doctor reports it instead of failing."""
    out: dict[str, list[str]] = {}
    models = [m for m in cfg.models if m.enabled] or [ModelSettings(name="probe", source="org/probe")]
    for model in models:
        tp = model.tensor_parallel_size or 1
        parts = [probe_partition(i) for i in range(tp)]
        try:
            spec = build_launch_spec(instance_id=f"doctor-{model.name}", model=model, vllm=cfg.vllm, partitions=parts,
                                     tp=tp, port=8100, memory_bytes_per_rank=GIB)
        except UserError as e:
            out[model.name] = [f"error: {e}"]
            continue
        out[model.name] = sorted({a.split("=", 1)[0] for a in spec.argv if a.startswith("--")})
    return out
