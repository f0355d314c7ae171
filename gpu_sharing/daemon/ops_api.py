"""Recovery endpoints: POST /admin/restart|hold|release (bearer token) and GET /logs/{instance}.

Why a separate module: http_api.py stays the small list of core routes; these are the
operator's undo buttons (``gpu-sharing restart|hold|release|logs``). Bodies are JSON
``{"target": "<model or instance>"}``; answers are JSON, 200 on success, 400 for an
unknown target (the message lists what exists), 401 without the token.

``GET /logs/{instance}?n=N`` returns the last N lines and the byte offset of the end;
``?offset=B`` returns what was appended since B (``logs -f`` polls it). A rotated
(shorter) file restarts from its beginning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from gpu_sharing.errors import UserError

MAX_LOG_LINES = 10_000
MAX_LOG_BYTES = 4 << 20
Operate = Callable[[str, str], Awaitable[dict]]


def read_log(path: Path, n: int, offset: int | None) -> tuple[list[str], int]:
    """(lines, end offset): the last ``n`` lines, or the lines after ``offset``."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset is not None and offset <= size:
                f.seek(max(offset, size - MAX_LOG_BYTES))
                data = f.read()
                # a partial last line waits for the next poll
                keep = data.rfind(b"\n") + 1
                return data[:keep].decode("utf-8", "replace").splitlines(), size - len(data) + keep
            f.seek(max(0, size - MAX_LOG_BYTES))
            data = f.read()
    except FileNotFoundError:
        return [], 0
    lines = data.decode("utf-8", "replace").splitlines()
    return (lines[-n:] if n > 0 else []), size


def add_routes(app: web.Application, *, authorized: Callable[[web.Request], bool], operate: Operate,
               log_path: Callable[[str], Path | None]) -> None:
    async def admin(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON: {\"target\": NAME}"}, status=400)
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            return web.json_response({"error": "body must be JSON: {\"target\": NAME}"}, status=400)
        try:
            result = await operate(request.match_info["action"], target)
        except UserError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(result)

    async def logs(request: web.Request) -> web.Response:
        iid = request.match_info["instance"]
        path = log_path(iid)
        if path is None:
            return web.json_response({"error": f"no instance {iid!r} (see GET /status)"}, status=404)
        try:
            n = min(int(request.query.get("n", "100")), MAX_LOG_LINES)
            offset = int(request.query["offset"]) if "offset" in request.query else None
        except ValueError:
            return web.json_response({"error": "n and offset must be integers"}, status=400)
        lines, end = read_log(path, n, offset)
        return web.json_response({"instance": iid, "path": str(path), "lines": lines, "offset": end})

    app.router.add_post(r"/admin/{action:restart|hold|release}", admin)
    app.router.add_get("/logs/{instance}", logs)
