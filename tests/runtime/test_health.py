"""The /health probe against a real loopback HTTP server: 200 ready, anything else or refused not ready."""

from __future__ import annotations

import http.server
import socket
import threading

from gpu_sharing.runtime.health import http_health


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server naming
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve(status: int):
    handler = type("H", (_Handler,), {"status": status})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_health_200_is_ready_503_is_not():
    ok, busy = _serve(200), _serve(503)
    try:
        assert http_health(f"http://127.0.0.1:{ok.server_address[1]}")
        assert not http_health(f"http://127.0.0.1:{busy.server_address[1]}")
    finally:
        ok.shutdown()
        busy.shutdown()


def test_refused_is_not_ready():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not http_health(f"http://127.0.0.1:{port}", timeout_s=0.5)
