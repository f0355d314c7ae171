"""``gpu-sharing export``: the current hardware state in the config's own schema (mig-parted's export).

Without --json it prints YAML (version v1, node.gpu_model, gpus with pinned modes) that
`gpu-sharing validate` accepts, so the current layout can be captured and fed back.
"""

from __future__ import annotations

import argparse

import yaml

from gpu_sharing.cli import common
from gpu_sharing.cli.commands.partition import _observe, backend_for, inventory_json
from gpu_sharing.config.schema import BackendKind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="print the current partition layout as config YAML (or --json inventory)")
    common.add_simulate_flags(p)
    common.add_json_flag(p)
    p.add_argument("--backend", choices=[b.value for b in BackendKind], default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inv = _observe(backend_for(args))
    if args.json:
        common.print_json({"gpus": inventory_json(inv)})
        return 0
    groups: dict[tuple[str, str], list[int]] = {}
    for g in inv.gpus:
        groups.setdefault((g.compute_mode.value, g.memory_mode.value), []).append(g.index)
    models = sorted({g.model for g in inv.gpus})
    doc = {"version": "v1", "node": {"gpu_model": models[0]} if len(models) == 1 else {},
           "gpus": [{"devices": devs, "compute_partition": c, "memory_partition": m} for (c, m), devs in sorted(groups.items())]}
    print(yaml.safe_dump(doc, sort_keys=False).rstrip())
    return 0
