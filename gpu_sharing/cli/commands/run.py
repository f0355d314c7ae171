"""``gpu-sharing run``: the daemon (what systemd starts). ``--simulate`` runs it on the simulated node."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._runtime_common import add_runtime_flags, make_reconciler


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the daemon: reconcile, supervise, reload, API, router, metrics")
    common.add_config_flag(p)
    common.add_simulate_flags(p)
    add_runtime_flags(p)
    p.add_argument("--api-port", type=common.bounded_int(0, 65535), help="override api.port (0 = any free port)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="event lines as readable text (default) or one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpu_sharing.daemon.service import Daemon

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    path, cfg = common.load(args)
    if args.api_port is not None:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"port": args.api_port})})
    args.json = False
    reconciler = make_reconciler(args, cfg, path)
    daemon = Daemon(path, reconciler, json_logs=args.log_format == "json")
    print(f"gpu-sharing: {len(cfg.models)} models from {path}; API on http://{cfg.api.host}:{cfg.api.port}"
          + (" (simulated node)" if args.simulate else ""), file=sys.stderr, flush=True)
    return asyncio.run(daemon.run())
