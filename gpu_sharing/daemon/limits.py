"""Resource limits of the daemon's HTTP API: file descriptors, connections, idle and slow clients, bodies.

Why: the daemon's fds are shared by the API, the router's upstream connections, the
health probes and the instances' log files. 1100 idle connections exhausted a
1024-fd limit; the health probes then failed and healthy instances were restarted.
So at start the soft RLIMIT_NOFILE is raised to the hard limit (capped), the API
accepts at most half of it (the rest stays for everything else; a refused
connection is closed at once, so it costs no fd), an idle or half-sent request
head is dropped after HEADER_TIMEOUT_S (aiohttp's keepalive timer covers a
connection that never completes a request), and a body that does not arrive
within BODY_TIMEOUT_S is answered 408 and its buffer released.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("gpu_sharing.daemon")

NOFILE_TARGET = 65536
HEADER_TIMEOUT_S = 15.0
BODY_TIMEOUT_S = 30.0
MIN_CONNECTIONS = 16


def raise_fd_limit(target: int = NOFILE_TARGET) -> int:
    """Raise the soft RLIMIT_NOFILE toward min(hard, target); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else target, target)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, e)
    return soft


def max_connections_for(fd_limit: int) -> int:
    """Half the fds for API clients: the other half for upstreams, probes, logs and the state files."""
    return max(MIN_CONNECTIONS, fd_limit // 2)


def limit_connections(server: web.Server, max_connections: int) -> None:
    """Close a new connection at once when max_connections are open (the kernel fd is freed immediately)."""
    register = server.connection_made

    def connection_made(handler, transport: asyncio.Transport) -> None:
        if len(server.connections) >= max_connections:
            transport.abort()
            return
        register(handler, transport)
    server.connection_made = connection_made  # type: ignore[method-assign]


def body_timeout_middleware(timeout_s: float = BODY_TIMEOUT_S):
    """Read a request's body within timeout_s or answer 408 (the partial body is dropped with the request)."""
    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), timeout_s)
            except asyncio.TimeoutError:
                return web.json_response({"error": f"request body not received within {timeout_s:g}s"}, status=408,
                                         headers={"Connection": "close"})
        return await handler(request)
    return middleware


__all__ = ["BODY_TIMEOUT_S", "HEADER_TIMEOUT_S", "body_timeout_middleware", "limit_connections",
           "max_connections_for", "raise_fd_limit"]
