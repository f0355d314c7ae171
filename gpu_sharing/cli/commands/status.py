"""``gpu-sharing status [--api URL] [-c FILE] [--json]``: what the running daemon sees, from its GET /status.

Why read the API and not the state file: the daemon's snapshot is the one picture the
router and the metrics also use (modes, states, VRAM, unplaceable reasons). The URL comes
from --api, else api.host/api.port of the config, else http://127.0.0.1:8080.
Unreachable daemon: exit 1 with the URL and the reason.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request

from gpu_sharing.cli import common
from gpu_sharing.errors import OperationError, UserError

DEFAULT_API = "http://127.0.0.1:8080"
GIB = 1 << 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running daemon's GPUs, instances and last reconcile")
    p.add_argument("--api", metavar="URL", help="daemon API URL (default: from the config's api.host/api.port)")
    common.add_config_flag(p)
    p.add_argument("--timeout", type=common.bounded_float(0.001, 3600), default=5.0, metavar="SECONDS", help="HTTP timeout (default 5)")
    common.add_json_flag(p)
    p.set_defaults(func=run)


def api_url(args: argparse.Namespace) -> str:
    if args.api:
        return args.api.rstrip("/")
    try:
        _, cfg = common.load(args)
    except UserError:
        if args.config:
            raise
        return DEFAULT_API
    host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.api.port}"


def fetch_status(url: str, timeout_s: float) -> dict:
    try:
        with urllib.request.urlopen(url + "/status", timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise OperationError(f"daemon at {url} answered GET /status with HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OperationError(f"cannot reach the gpu-sharing daemon at {url} ({reason}); is it running? "
                             "(systemctl status gpu-sharing, or pass --api URL)") from None
    except json.JSONDecodeError:
        raise OperationError(f"{url}/status did not return JSON; is that the gpu-sharing API?") from None


def gib(n: int | None) -> str:
    return f"{(n or 0) / GIB:.1f}"


def print_status(st: dict) -> None:
    gpus = st.get("gpus") or []
    print(f"GPUs ({len(gpus)})")
    common.print_table(["GPU", "MODEL", "COMPUTE", "MEMORY", "PARTITIONS", "VRAM USED/TOTAL GiB"],
                       [[g["gpu"], g["model"], g["compute_partition"], g["memory_partition"], len(g["partitions"]),
                         f"{gib(sum(p['vram_used_bytes'] for p in g['partitions']))}/"
                         f"{gib(sum(p['vram_total_bytes'] for p in g['partitions']))}"] for g in gpus])
    inst = st.get("instances") or []
    print(f"\nInstances ({len(inst)}, {sum(i['state'] == 'READY' for i in inst)} READY)")
    common.print_table(["INSTANCE", "MODEL", "STATE", "PID", "PORT", "PARTITIONS", "RESTARTS", "VRAM USED/BUDGET GiB",
                        "LAST ERROR"],
                       [[i["instance_id"], i["model"], i["state"], i["pid"] or "-", i["port"],
                         ",".join(i["partitions"]) or "-", i["restarts"],
                         f"{gib(i.get('vram_used_bytes'))}/{gib(i['memory_budget_bytes'])}",
                         (i.get("last_error") or "")[:60]] for i in inst])
    unpl = st.get("unplaceable") or []
    if unpl:
        print(f"\nUnplaceable ({len(unpl)})")
        common.print_table(["MODEL", "REPLICA", "REASON"], [[u["model"], u["replica"], u["reason"]] for u in unpl])
    at = st.get("last_reconcile_at")
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} ({time.time() - at:.0f}s ago)" if at else "never"
    ok = {True: "ok", False: "FAILED", None: "-"}[st.get("last_reconcile_ok")]
    print(f"\nLast reconcile: {when}, {ok}; config generation {st.get('config_generation')}")
    if st.get("last_reconcile_error"):
        print(f"  errors: {st['last_reconcile_error']}")


def run(args: argparse.Namespace) -> int:
    st = fetch_status(api_url(args), args.timeout)
    if args.json:
        common.print_json(st)
    else:
        print_status(st)
    return 0
