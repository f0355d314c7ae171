"""``gpu-sharing schema``: print the JSON Schema of the config (or the sizing catalog, or the fleet
file) so editors validate YAML as it is typed."""

from __future__ import annotations

import argparse
import json

from gpu_sharing.config.fleet_schema import Fleet
from gpu_sharing.config.schema import Config
from gpu_sharing.config.sizing_catalog import SizingCatalog


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the config's JSON Schema")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sizing", action="store_true", help="the sizing catalog's schema instead")
    which.add_argument("--fleet", action="store_true", help="the fleet file's schema instead (plan/kserve export --fleet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, title = ((SizingCatalog, "gpu-sharing sizing catalog v1") if args.sizing else
                    (Fleet, "gpu-sharing fleet v1") if args.fleet else (Config, "gpu-sharing config v1"))
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    print(json.dumps(schema, indent=2))
    return 0
