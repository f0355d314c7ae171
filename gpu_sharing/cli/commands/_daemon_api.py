"""Talking to the running daemon's API from the CLI: URL and token discovery, JSON requests.

Why one helper: ``restart``, ``hold``, ``release``, ``logs`` and ``stop`` (under a running
daemon) go through the daemon, never around it, so its supervisor knows an operator
acted (a hold is not a crash). The URL comes from --api, else the config's api.host/port;
the token from --token-file, else the config's api.token_file.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from gpu_sharing.cli import common
from gpu_sharing.cli.commands.status import api_url
from gpu_sharing.errors import OperationError, UserError


def add_api_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL", help="daemon API URL (default: from the config's api.host/api.port)")
    common.add_config_flag(p)
    p.add_argument("--token-file", metavar="FILE", help="bearer token for state changes (default: api.token_file)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="HTTP timeout (default 120)")
    common.add_json_flag(p)


def token(args: argparse.Namespace) -> str | None:
    path = getattr(args, "token_file", None)
    if not path:
        try:
            _, cfg = common.load(args)
            path = cfg.api.token_file
        except UserError:
            if args.config:
                raise
            path = None
    if not path:
        return None
    try:
        return open(path, encoding="utf-8").read().strip() or None
    except OSError as e:
        raise UserError(f"cannot read the API token file {path}: {e.strerror}") from None


def request(args: argparse.Namespace, method: str, path: str, body: dict | None = None, *,
            url: str | None = None) -> dict:
    """One JSON request; HTTP 400 -> UserError (exit 2), other failures -> OperationError (exit 1)."""
    base = url or api_url(args)
    headers = {"Content-Type": "application/json"}
    if method == "POST" and (tok := token(args)):
        headers["Authorization"] = f"Bearer {tok}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=getattr(args, "timeout", None) or 120.0) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", "")
        except (ValueError, AttributeError):
            msg = ""
        if e.code == 401:
            raise OperationError(f"daemon at {base} refused {method} {path}: unauthorized; pass --token-file or set "
                                 "api.token_file in the config") from None
        if e.code in (400, 404):
            raise UserError(msg or f"daemon at {base} answered HTTP {e.code}") from None
        raise OperationError(f"daemon at {base} answered {method} {path} with HTTP {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OperationError(f"cannot reach the gpu-sharing daemon at {base} ({reason}); is it running? "
                             "(systemctl status gpu-sharing, or pass --api URL)") from None


def daemon_running(args: argparse.Namespace) -> str | None:
    """The API URL when a daemon answers GET /healthz there, else None."""
    try:
        base = api_url(args)
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            return base if r.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError, UserError):
        return None


def operate(args: argparse.Namespace, action: str, target: str) -> int:
    result = request(args, "POST", f"/admin/{action}", {"target": target})
    if args.json:
        common.print_json(result)
    else:
        print(f"{action} {target}: {result.get('message', '')}")
    return 0
