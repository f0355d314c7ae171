"""``gpu-sharing stop [--all | MODEL...]``: stop instances we started (process group SIGTERM, then SIGKILL).

Only processes identified as ours (alive, same argv as recorded in the state
file) are signalled; the state file is updated.

Under a running daemon (its API answers), ``stop MODEL`` is ``hold MODEL`` through the
API: the daemon stops the instances and keeps them stopped until ``release`` (a stop
behind its back would look like a crash and be restarted).
"""

from __future__ import annotations

import argparse

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._daemon_api import daemon_running, operate
from gpu_sharing.cli.commands._runtime_common import add_runtime_flags, controller_lock, make_reconciler
from gpu_sharing.config.schema import Config
from gpu_sharing.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="stop instances of the given models, or --all")
    p.add_argument("models", nargs="*", metavar="MODEL", help="model names (as in the config)")
    p.add_argument("--all", action="store_true", help="stop every instance we started")
    common.add_config_flag(p)
    common.add_simulate_flags(p)
    add_runtime_flags(p)
    p.add_argument("--timeout", type=common.bounded_float(0, 86400), metavar="SECONDS", help="default: vllm.stop_grace_s + 10")
    p.add_argument("--api", metavar="URL", help="the running daemon's API (default: from the config)")
    p.add_argument("--token-file", metavar="FILE", help="bearer token for the daemon (default: api.token_file)")
    p.add_argument("--no-daemon", action="store_true", help="stop processes directly even if a daemon runs")
    common.add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.all and not args.models:
        raise UserError("say what to stop: MODEL names, or --all")
    if args.all and args.models:
        raise UserError("give MODEL names or --all, not both")
    if not args.no_daemon and (url := daemon_running(args)):
        if args.all:
            raise UserError(f"a gpu-sharing daemon is running at {url}: stop it (systemctl stop gpu-sharing, "
                            "on_exit: stop) or hold models one by one (gpu-sharing hold MODEL)")
        args.api = url
        for m in args.models:
            operate(args, "hold", m)
        return 0
    try:
        path, cfg = common.load(args)
    except UserError:
        if args.config:
            raise
        path, cfg = None, Config(version="v1")  # stop works from the state file alone
    with controller_lock(args, cfg, "stop"):
        return _stop_locked(args, cfg, path)


def _stop_locked(args: argparse.Namespace, cfg: Config, path: str | None) -> int:
    rec = make_reconciler(args, cfg, path)
    rec.adopt(restart_dead=False)
    launches = rec.supervisor.launches()
    if args.all:
        ids = [ln.instance_id for ln in launches]
    else:
        known = {ln.model for ln in launches}
        unknown = [m for m in args.models if m not in known]
        if unknown:
            raise UserError(f"no running instance of {', '.join(unknown)}; running models: "
                            f"{', '.join(sorted(known)) or 'none'}")
        ids = [ln.instance_id for ln in launches if ln.model in args.models]
    timeout_s = args.timeout if args.timeout is not None else rec.config.vllm.stop_grace_s + 10
    stopped = rec.stop_instances(ids, timeout_s)
    left = sorted(set(ids) - set(stopped))
    if args.json:
        common.print_json({"stopped": stopped, "still_running": left})
    else:
        print(f"stopped {len(stopped)} instance(s)" + (f"; still running: {', '.join(left)}" if left else ""))
    return 0 if not left else 1
