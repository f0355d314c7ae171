"""``gpu-sharing hold MODEL``: stop a model's instances and keep them stopped until ``release``.

Through the running daemon; a held model is not restarted, not counted as crashed, and
stays held across config reloads (``status`` shows it; ``/v1/models`` lists it ``held``).
"""

from __future__ import annotations

import argparse

from gpu_sharing.cli.commands._daemon_api import add_api_flags, operate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hold", help="stop a model and keep it stopped until `release` (via the daemon)")
    p.add_argument("model", metavar="MODEL")
    add_api_flags(p)
    p.set_defaults(func=lambda args: operate(args, "hold", args.model))
