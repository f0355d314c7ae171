"""``gpu-sharing validate``: check a config (and its sizing catalog) without touching anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.config.loader import load_sizing_catalog, resolve_relative
from gpu_sharing.sizing.resolve import check_catalog


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate a config file; exit 0 valid, 2 invalid")
    common.add_config_flag(p)
    common.add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path, cfg = common.load(args)
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
