"""``gpu-sharing release MODEL``: let a held model start again (the daemon reconciles at once)."""

from __future__ import annotations

import argparse

from gpu_sharing.cli.commands._daemon_api import add_api_flags, operate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="release a held model: the daemon starts it again")
    p.add_argument("model", metavar="MODEL")
    add_api_flags(p)
    p.set_defaults(func=lambda args: operate(args, "release", args.model))
