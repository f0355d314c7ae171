"""The daemon's HTTP API (aiohttp): /status, /metrics, /healthz, POST /admin/reload, and the OpenAI router
(/v1/..., /tokenize, /detokenize, /version). Recovery endpoints are in ops_api.py.

Binds 127.0.0.1 unless configured. State-changing endpoints need ``Authorization:
Bearer <token>`` with the token from api.token_file (constant-time compare); with no
token file they are allowed only when the API listens on loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gpu_sharing.config.intake import TOKEN_MAX_BYTES, read_bounded
from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.limits import body_timeout_middleware
from gpu_sharing.daemon.router import PROXIED_POST_PATHS, Router
from gpu_sharing.errors import UserError


def read_token(path: str | None) -> str | None:
    """The bearer token (bounded read); UserError naming api.token_file, never its content."""
    if not path:
        return None
    raw = read_bounded(path, TOKEN_MAX_BYTES, "api.token_file")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{path}: api.token_file is not UTF-8 text") from None
    if not token:
        raise UserError(f"{path}: api.token_file is empty")
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_authorizer(api: ApiSettings, token: str | None | Callable[[], str | None]) -> Callable[[web.Request], bool]:
    """The check every state-changing endpoint uses (reload here, restart/hold/release in ops_api)."""
    def authorized(request: web.Request) -> bool:
        current = token() if callable(token) else token  # re-read on reload: a rotated token applies at once
        if current is None:
            return is_loopback(api.host)
        got = request.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), current.encode())
    return authorized


def make_app(api: ApiSettings, *, status: Callable[[], dict], registry: CollectorRegistry | None, router: Router,
             reload: Callable[[], Awaitable[dict]], token: str | None | Callable[[], str | None],
             health: Callable[[], dict] | None = None) -> web.Application:
    authorized = make_authorizer(api, token)

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status())

    async def get_metrics(request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(request: web.Request) -> web.Response:
        body = health() if health is not None else {"ok": True}  # the worker's liveness (daemon/liveness.py)
        return web.json_response(body, status=200 if body.get("ok") else 503)

    async def admin_reload(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        result = await reload()
        return web.json_response(result, status=200 if result.get("ok") else 422)

    app = web.Application(client_max_size=api.max_body_bytes, middlewares=[body_timeout_middleware()])
    app.router.add_get("/status", get_status)
    if registry is not None:  # metrics.enabled: false -> no /metrics endpoint (404)
        app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/reload", admin_reload)
    app.router.add_get("/v1/models", router.models)
    for path in PROXIED_POST_PATHS:
        app.router.add_post(path, router.proxy)
    app.router.add_get("/version", router.version)
    return app
