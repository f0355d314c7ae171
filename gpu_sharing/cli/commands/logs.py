"""``gpu-sharing logs INSTANCE [-n N] [-f]``: an instance's vLLM log, through the daemon's GET /logs.

``-f`` keeps polling for appended lines (every ``--interval`` seconds) until interrupted;
a rotated log continues from the new file's start.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._daemon_api import add_api_flags, request


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show an instance's vLLM log (via the daemon)")
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="last N lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll interval with -f")
    add_api_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    out = request(args, "GET", f"/logs/{args.instance}?n={max(0, args.lines)}")
    if args.json and not args.follow:
        common.print_json(out)
        return 0
    stop = stop or threading.Event()
    while True:
        for line in out["lines"]:
            print(json.dumps({"instance": args.instance, "line": line}) if args.json else line)
        sys.stdout.flush()
        if not args.follow or stop.wait(args.interval):
            return 0
        out = request(args, "GET", f"/logs/{args.instance}?offset={out['offset']}")
