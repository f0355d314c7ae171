"""size_model: the size of one configured model, from the most trusted source available.

Order: measured (an earlier run with the same model, options and tp) > the sizing
catalog (config/model_sizing_config.yaml) > config.json (inline in the YAML, a path,
the model's local directory, or the local Hugging Face cache; never downloaded) >
a UserError saying what to add. Reading config.json files is the only I/O here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpu_sharing.config.intake import CONFIG_JSON_MAX_BYTES, check_hf_config, read_bounded
from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.config.sizing_catalog import SizingCatalog
from gpu_sharing.errors import UserError
from gpu_sharing.sizing.estimate import size_from_config_json
from gpu_sharing.sizing.measured_store import MeasuredSizes, measured_key
from gpu_sharing.sizing.types import ModelSize, SizeSource


def hf_cache_dirs(hf_cache_dir: Path | None = None) -> list[Path]:
    out = []
    if hf_cache_dir:
        out.append(Path(hf_cache_dir))
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]) / "hub")
    out.append(Path.home() / ".cache" / "huggingface" / "hub")
    return out


def find_config_json(source: str, *, config_dir: Path | None = None, hf_cache_dir: Path | None = None) -> Path | None:
    p = Path(os.path.expanduser(source))
    if not p.is_absolute() and config_dir is not None and (config_dir / p).exists():
        p = config_dir / p
    if p.is_dir() and (p / "config.json").is_file():
        return p / "config.json"
    if "/" in source and not source.startswith(("/", ".")):
        repo = "models--" + source.replace("/", "--")
        for cache in hf_cache_dirs(hf_cache_dir):
            snaps = cache / repo / "snapshots"
            if snaps.is_dir():
                for snap in sorted(snaps.iterdir(), key=lambda s: s.stat().st_mtime, reverse=True):
                    if (snap / "config.json").is_file():
                        return snap / "config.json"
    return None


def load_config_json(path: Path) -> dict[str, Any]:
    raw = read_bounded(path, CONFIG_JSON_MAX_BYTES, "config.json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # the position only: never echo the file's content
        raise UserError(f"{path}: cannot read config.json ({type(e).__name__} at byte "
                        f"{getattr(e, 'pos', '?')})") from None
    check_hf_config(data, str(path))
    return data


def model_config_json(model: ModelSettings, *, config_dir: Path | None = None,
                      hf_cache_dir: Path | None = None) -> tuple[dict[str, Any], str] | None:
    if isinstance(model.config_json, dict):
        check_hf_config(model.config_json, f"models[{model.name}].config_json")
        return model.config_json, f"models[{model.name}].config_json"
    if isinstance(model.config_json, str):
        p = Path(os.path.expanduser(model.config_json))
        if not p.is_absolute() and config_dir is not None:
            p = config_dir / p
        return load_config_json(p), str(p)
    found = find_config_json(model.source, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
    return (load_config_json(found), str(found)) if found else None


def size_model(model: ModelSettings, *, tp: int = 1, catalog: SizingCatalog | None = None,
               measured: MeasuredSizes | None = None, config_dir: Path | None = None,
               hf_cache_dir: Path | None = None, gfx_target: str | None = None) -> ModelSize:
    """Size ``model`` per rank at tensor parallel ``tp``. Raises UserError when nothing can size it.
    ``gfx_target`` (e.g. "gfx942") selects ROCm's MXFP4 expert padding; None sizes for the larger (gfx950)."""
    estimate: ModelSize | None = None
    found = model_config_json(model, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
    if found:
        cfg, where = found
        estimate = size_from_config_json(
            cfg, tp=tp, max_model_len=model.max_model_len, max_num_seqs=model.max_num_seqs,
            max_num_batched_tokens=model.max_num_batched_tokens, dtype=model.dtype, quantization=model.quantization,
            kv_cache_dtype=model.kv_cache_dtype, kv_cache_bytes=model.kv_cache_bytes,
            enforce_eager=model.enforce_eager, block_size=block_size_of(model), config_name=where,
            gfx_target=gfx_target)
        estimate = _add_extras(estimate, model, tp, config_dir, hf_cache_dir)
    if measured is not None:
        got = measured.get(measured_key(model, tp=tp))
        if got:
            base = estimate or _empty(tp)
            return replace(base, total_bytes_per_rank=got, source=SizeSource.MEASURED,
                           contract=base.contract.with_total(got) if base.contract else None,
                           notes=base.notes + ("measured VRAM per rank from an earlier run",))
    entry = catalog_entry(model, catalog)
    if entry is not None:
        base = estimate or _empty(tp)
        per_rank = math.ceil(entry.memory_bytes / tp)
        notes = base.notes + (f"catalog: {entry.memory_gb} GB per replica for {entry.model_id}",)
        if estimate is not None and per_rank < estimate.total_bytes_per_rank and not entry.trust_catalog:
            per_rank = estimate.total_bytes_per_rank  # memory_gb is a minimum (seed 003)
            notes += ("catalog entry is below the computed size: the computed size is used "
                      "(set trust_catalog: true on the entry to force it)",)
        return replace(base, param_count=base.param_count or entry.parameter_count, tp=tp,
                       total_bytes_per_rank=per_rank, source=SizeSource.CATALOG, notes=notes,
                       contract=base.contract.with_total(per_rank) if base.contract else None)
    if estimate is not None:
        return estimate
    raise UserError(f"cannot size model {model.name!r} ({model.source}): no measured size, no sizing catalog entry "
                    f"for {model.source!r}, and no config.json (not a local directory, not in the local Hugging Face "
                    f"cache). Add `config_json:` to models[{model.name}] or an entry to the sizing catalog.")


def catalog_entry(model: ModelSettings, catalog: SizingCatalog | None):
    if catalog is None:
        return None
    return catalog.find(model.source, model.quantization) or catalog.find(model.name, model.quantization)


def min_partition_bytes(model: ModelSettings, catalog: SizingCatalog | None) -> int:
    """The catalog's recommended_partition_gb as a placement floor (ModelDemand.min_partition_bytes); 0 if none."""
    entry = catalog_entry(model, catalog)
    return int(entry.recommended_partition_gb * 1e9) if entry and entry.recommended_partition_gb else 0


def check_catalog(model: ModelSettings, catalog: SizingCatalog | None, *, tp: int = 1,
                  config_dir: Path | None = None, hf_cache_dir: Path | None = None) -> None:
    """Validate-time: a catalog entry below the computed weights or below what the configured context
    needs is an error naming both numbers, unless the entry says trust_catalog: true."""
    entry = catalog_entry(model, catalog)
    if entry is None or entry.trust_catalog:
        return
    found = model_config_json(model, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
    if not found:
        return
    est = size_model(model, tp=tp, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
    replica_gb = entry.memory_gb
    weights_gb = est.weights_bytes_per_rank * tp / 1e9
    total_gb = est.total_bytes_per_rank * tp / 1e9
    where = f"sizing catalog entry {entry.model_id!r} memory_gb"
    if entry.memory_bytes < est.weights_bytes_per_rank * tp:
        raise UserError(f"{where}: {replica_gb} GB is below the computed weights of models[{model.name}] "
                        f"({weights_gb:.2f} GB); raise memory_gb or set trust_catalog: true on the entry")
    if entry.memory_bytes < est.total_bytes_per_rank * tp:
        ctx = est.contract.max_model_len if est.contract else model.max_model_len
        raise UserError(f"{where}: {replica_gb} GB is below what models[{model.name}] needs for "
                        f"{ctx} tokens x {model.max_num_seqs} sequences ({total_gb:.2f} GB: weights {weights_gb:.2f} "
                        "GB + KV + overheads); raise memory_gb, lower max_model_len, or set trust_catalog: true")


def block_size_of(model: ModelSettings) -> int:
    """--block-size from the model's vllm_args (vLLM's default is 16 tokens)."""
    v = model.vllm_args.get("block-size")
    return int(v) if isinstance(v, (int, str)) and str(v).isdigit() and int(v) > 0 else 16


def _empty(tp: int) -> ModelSize:
    return ModelSize(0, 0, 0, 0, 0, 0, 0, 0, 0, tp, SizeSource.CATALOG)


def _add_extras(size: ModelSize, model: ModelSettings, tp: int, config_dir, hf_cache_dir) -> ModelSize:
    """Speculative draft weights + KV, and LoRA adapter slots, count toward the budget."""
    extra, notes = 0, list(size.notes)
    if model.speculative is not None:
        draft_cfg = model.speculative.config_json
        if draft_cfg is None:
            path = find_config_json(model.speculative.model, config_dir=config_dir, hf_cache_dir=hf_cache_dir)
            draft_cfg = load_config_json(path) if path else None
        if draft_cfg is None:
            raise UserError(f"models[{model.name}].speculative: no config.json for draft model "
                            f"{model.speculative.model!r}; add speculative.config_json")
        d = size_from_config_json(draft_cfg, tp=tp, max_model_len=model.max_model_len or 8192,
                                  max_num_seqs=model.max_num_seqs, enforce_eager=True, dtype=model.dtype)
        extra += d.weights_bytes_per_rank + d.kv_bytes
        notes.append(f"draft model {model.speculative.model}: weights + KV per rank")
    if model.lora is not None:
        # Each adapter slot holds A and B for every linear: rank x (in + out) x 2 bytes, ~ rank x 8 x hidden per layer.
        lora_bytes = model.lora.max_loras * model.lora.max_lora_rank * 64 * 1024 * 2
        extra += lora_bytes // tp
        notes.append(f"LoRA: {model.lora.max_loras} slots x rank {model.lora.max_lora_rank} (128 KiB per rank unit)")
    if not extra:
        return size
    contract = size.contract
    if contract is not None:
        contract = replace(contract, budget=replace(contract.budget, extras_bytes=contract.budget.extras_bytes + extra))
    return replace(size, runtime_overhead_bytes=size.runtime_overhead_bytes + extra,
                   total_bytes_per_rank=size.total_bytes_per_rank + extra, notes=tuple(notes), contract=contract)
