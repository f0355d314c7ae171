"""``gpu-sharing schema``: print the JSON Schema of the config so editors validate YAML as it is typed."""

from __future__ import annotations

import argparse
import json

from gpu_sharing.config.schema import Config
from gpu_sharing.config.sizing_catalog import SizingCatalog


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the config's JSON Schema")
    p.add_argument("--sizing", action="store_true", help="the sizing catalog's schema instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = SizingCatalog if args.sizing else Config
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gpu-sharing sizing catalog v1" if args.sizing else "gpu-sharing config v1"
    print(json.dumps(schema, indent=2))
    return 0
