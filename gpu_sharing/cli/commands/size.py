"""``gpu-sharing size MODEL_OR_PATH``: weights, KV cache, overheads per rank, and where it fits."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from gpu_sharing.cli import common
from gpu_sharing.config.loader import load_config, load_sizing_catalog, resolve_relative, validation_problems
from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.errors import ConfigError, UserError
from gpu_sharing.sizing import size_from_config_json, size_model
from gpu_sharing.sizing.fit import fit_table, max_model_len_that_fits
from gpu_sharing.sizing.resolve import load_config_json

GIB = 1024**3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("size", help="size a model: weights, KV cache, overheads per rank, fit per GPU and mode")
    p.add_argument("model", nargs="?", help="model name from the config, HF id, or local model dir")
    common.add_config_flag(p)
    common.add_json_flag(p)
    p.add_argument("--config-json", metavar="FILE", help="size a bare config.json file")
    p.add_argument("--max-model-len", type=common.bounded_int(1, 1 << 24))
    p.add_argument("--max-num-seqs", type=common.bounded_int(1, 1 << 20))
    p.add_argument("--tp", type=common.bounded_int(1, 64), default=1)
    p.add_argument("--quantization")
    p.add_argument("--kv-cache-dtype", default=None)
    p.add_argument("--enforce-eager", action="store_true", default=None)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> tuple[ModelSettings, object, Path | None]:
    cfg, path = None, None
    try:
        path = common.config_path(args)
        cfg = load_config(path)
    except UserError:
        if args.config:
            raise
    base = next((m for m in cfg.models if args.model in (m.name, m.source)), None) if cfg and args.model else None
    data = base.model_dump() if base else {"name": "model", "source": args.model or "config.json"}
    if args.config_json:
        data["config_json"] = load_config_json(Path(args.config_json))
    for key in ("max_model_len", "max_num_seqs", "quantization", "kv_cache_dtype", "enforce_eager"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    data["tensor_parallel_size"] = None
    catalog = None
    if cfg and cfg.sizing.catalog:
        catalog = load_sizing_catalog(resolve_relative(path, cfg.sizing.catalog))
    try:
        model = ModelSettings(**data)
    except ValidationError as e:  # --quantization / --kv-cache-dtype / a bad config.json: name the option
        raise ConfigError("size options", validation_problems(e)) from None
    return model, catalog, Path(path).resolve().parent if path else None


def run(args: argparse.Namespace) -> int:
    if not args.model and not args.config_json:
        raise UserError("size: give a MODEL (name, HF id or local dir) or --config-json FILE")
    model, catalog, config_dir = _settings(args)
    size = size_model(model, tp=args.tp, catalog=catalog, config_dir=config_dir)
    fits = fit_table(lambda tp: size_model(model, tp=tp, catalog=catalog, config_dir=config_dir).total_bytes_per_rank,
                     tp=args.tp)
    out = {"model": model.source, "param_count": size.param_count, "weights_bytes": size.weights_bytes,
           "weights_bytes_per_rank": size.weights_bytes_per_rank, "kv_bytes_per_token": size.kv_bytes_per_token,
           "kv_tokens": size.kv_tokens, "kv_bytes": size.kv_bytes, "activation_bytes": size.activation_bytes,
           "runtime_overhead_bytes": size.runtime_overhead_bytes, "overhead_bytes": size.overhead_bytes,
           "total_bytes_per_rank": size.total_bytes_per_rank, "tp": size.tp, "source": size.source.value,
           "warnings": list(size.warnings), "notes": list(size.notes), "fits": fits}
    c = size.contract
    if c is not None:
        b = c.budget
        out["contract"] = {"max_model_len": c.max_model_len, "max_model_len_auto": c.max_model_len_auto,
                           "max_num_seqs": c.max_num_seqs, "max_num_batched_tokens": c.max_num_batched_tokens,
                           "kv_cache_dtype": c.kv_cache_dtype, "block_size": c.block_size,
                           "enforce_eager": c.enforce_eager,
                           "budget_bytes_per_rank": {"weights": b.weights_bytes, "kv": b.kv_bytes,
                                                     "activations": b.activation_bytes, "graphs": b.graph_bytes,
                                                     "runtime": b.runtime_bytes, "extras": b.extras_bytes,
                                                     "total": b.total_bytes}}
        if c.max_model_len_auto and size.source.value != "measured":
            for r in fits:  # what auto-fit would pass on a partition of this size (after the planner's headroom)
                r["max_model_len_fit"] = c.fitted_to(int(r["partition_bytes"] * 0.97)).max_model_len if r["fits"] else None
    if args.json:
        common.print_json(out)
        return 0
    for w in size.warnings:
        print(f"warning: {w}")
    rows = [["parameters", f"{size.param_count:,}"], ["weights (all ranks)", _b(size.weights_bytes)],
            ["weights per rank", _b(size.weights_bytes_per_rank)],
            ["KV per token per rank", f"{size.kv_bytes_per_token:,} B"],
            ["KV cache", f"{_b(size.kv_bytes)} ({size.kv_tokens:,} tokens)"],
            ["activations", _b(size.activation_bytes)], ["runtime + graphs", _b(size.runtime_overhead_bytes)],
            ["TOTAL per rank", _b(size.total_bytes_per_rank)], ["source", size.source.value]]
    if c is not None:
        rows += [["--max-model-len", f"{c.max_model_len}" + (" (auto-fit: longest that fits the placement)"
                                                               if c.max_model_len_auto else "")],
                 ["--max-num-seqs", str(c.max_num_seqs)], ["--max-num-batched-tokens", str(c.max_num_batched_tokens)],
                 ["graphs / runtime", f"{_b(c.budget.graph_bytes)} / {_b(c.budget.runtime_bytes)}"]]
    common.print_table(["", f"{model.source} (tp={size.tp})"], rows)
    print()
    auto = c is not None and c.max_model_len_auto
    common.print_table(["GPU", "MODE", "PARTITION", "FITS", "ROOM", "SMALLEST MODE"] + (["AUTO-FIT CONTEXT"] if auto else []),
                       [[r["gpu_model"], r["compute_partition"], _b(r["partition_bytes"]), "yes" if r["fits"] else "no",
                         _b(r["room_bytes"]), r["smallest_mode_that_fits"] or "-"]
                        + ([r.get("max_model_len_fit") or "-"] if auto else []) for r in fits])
    return 0


def _b(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


__all__ = ["max_model_len_that_fits", "size_from_config_json"]
