"""``gpu-sharing restart MODEL|INSTANCE``: restart through the running daemon; clears FAILED and a hold.

The crash history is cleared (a FAILED instance gets its full restart budget again);
a running instance is stopped and started, which is not counted as a crash.
"""

from __future__ import annotations

import argparse

from gpu_sharing.cli.commands._daemon_api import add_api_flags, operate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restart", help="restart a model's instances (or one instance) via the daemon; clears FAILED")
    p.add_argument("target", metavar="MODEL|INSTANCE")
    add_api_flags(p)
    p.set_defaults(func=lambda args: operate(args, "restart", args.target))
