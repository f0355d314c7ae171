"""Readiness probe: vLLM answers ``GET /health`` with 200 once the engine is up.

Before that the socket is refused (vLLM binds only after loading), so any
connection error simply means "not ready yet". The timeout is short because
the supervisor's tick probes every starting instance on loopback.
"""

from __future__ import annotations

import http.client
from typing import Callable
from urllib.parse import urlsplit

HealthChecker = Callable[[str], bool]
"""health_checker(base_url) -> True when /health returned 200."""


def http_health(base_url: str, timeout_s: float = 1.0) -> bool:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
