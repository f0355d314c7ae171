"""``gpu-sharing validate``: check a config (and its sizing catalog) without touching anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.config.intake import hf_config_problems
from gpu_sharing.config.loader import load_sizing_catalog, resolve_relative
from gpu_sharing.config.schema import Config
from gpu_sharing.errors import ConfigError, UserError
from gpu_sharing.sizing.resolve import check_catalog, model_config_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate a config file; exit 0 valid, 2 invalid")
    common.add_config_flag(p)
    common.add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path, cfg = common.load(args)
    _check_config_jsons(path, cfg)
    catalog_entries = None
    if cfg.sizing.catalog:
        catalog = load_sizing_catalog(resolve_relative(path, cfg.sizing.catalog))
        catalog_entries = len(catalog.models)
        config_dir = Path(path).resolve().parent
        for model in cfg.models:  # an entry below the computed weights or context is bad input (exit 2)
            check_catalog(model, catalog, tp=model.tensor_parallel_size or 1, config_dir=config_dir)
    resident = sum(m.replicas if m.scaling is None else m.scaling.min_replicas for m in cfg.models)
    on_demand = sum(1 for m in cfg.models if m.scaling is not None)
    if args.json:
        common.print_json({"valid": True, "file": path, "models": len(cfg.models), "replicas": resident,
                           "demand_driven_models": on_demand, "sizing_catalog_entries": catalog_entries})
    else:
        extra = f", {on_demand} demand-driven" if on_demand else ""
        extra += f", sizing catalog with {catalog_entries} entries" if catalog_entries is not None else ""
        print(f"{path}: valid (version v1, {len(cfg.models)} models, {resident} replicas{extra})")
    return 0


def _check_config_jsons(path: str, cfg: Config) -> None:
    """Every model's config.json that can be found here: readable, and numbers the sizing can use
    (positive integers where the formulas divide, finite values). A model hub file is input too."""
    problems: list[tuple[str, str]] = []
    config_dir = Path(path).resolve().parent
    hf_cache = Path(cfg.sizing.hf_cache_dir) if cfg.sizing.hf_cache_dir else None
    for i, model in enumerate(cfg.models):
        key = f"models[{i}].config_json"
        if isinstance(model.config_json, dict):  # inline: every bad key with its full path
            problems += [(f"{key}.{k}", m) for k, m in hf_config_problems(model.config_json)]
            continue
        try:
            found = model_config_json(model, config_dir=config_dir, hf_cache_dir=hf_cache)
        except UserError as e:
            problems.append((key, str(e)))
            continue
        if found is not None:
            problems += [(f"{key}.{k}" if isinstance(model.config_json, dict) else f"{key} ({found[1]}): {k}", m)
                         for k, m in hf_config_problems(found[0])]
    if problems:
        raise ConfigError(path, problems)
