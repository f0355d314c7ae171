"""API settings across a reload: which changes apply now, which need a restart, and the exposure warning.

Why: the listening socket and the aiohttp application are built once at start, so a
reload that changes api.host, api.port, api.max_body_bytes or metrics.enabled was
silently ignored; the operator now gets an event saying a restart is needed. The
token is different: it is re-read on every reload (a rotated token applies at once,
the old one stops working), and a token file that cannot be read keeps the old
token with an error event rather than opening the API. A non-loopback listener
without a token serves /status and the OpenAI routes to the network: a loud
warning at start and at every reload.
"""

from __future__ import annotations

from gpu_sharing.config.schema import Config
from gpu_sharing.daemon.http_api import is_loopback

RESTART_KEYS = ("host", "port", "max_body_bytes", "retry_after_s")


def needs_restart(old: Config, new: Config) -> list[str]:
    """Setting names whose new value only takes effect after a daemon restart."""
    out = [f"api.{k}" for k in RESTART_KEYS if getattr(old.api, k) != getattr(new.api, k)]
    if old.metrics.enabled != new.metrics.enabled:
        out.append("metrics.enabled")
    return out


def exposure_warning(config: Config, token: str | None) -> str | None:
    api = config.api
    if token is None and not is_loopback(api.host):
        return (f"the API listens on {api.host}:{api.port} (not loopback) WITHOUT a token: /status, /metrics and "
                "the /v1 routes are open to the network and POST /admin/* is refused; set api.token_file, or "
                "bind 127.0.0.1 behind an authenticating proxy")
    return None


__all__ = ["exposure_warning", "needs_restart"]
