"""Ports: READY needs the port's listening socket to belong to the instance's process group (an intruder that
answers /health on our port never makes the instance READY), and a port found taken before a (re)spawn is
reallocated (argv, URL and marker follow) instead of being retried until FAILED."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from gpu_sharing.config.schema import VllmSettings
from gpu_sharing.reconcile.launch import listener_guard, port_guard
from gpu_sharing.runtime.health import http_health
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.port_owner import listener_belongs_to
from gpu_sharing.runtime.ports import PortAllocator
from gpu_sharing.runtime.supervisor import InstanceLaunch, Supervisor

INTRUDER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.fixture
def intruder():
    """Another program answering 200 on every path, on a port of its choosing."""
    p = subprocess.Popen([sys.executable, "-c", INTRUDER], stdout=subprocess.PIPE, text=True, start_new_session=True)
    port = int(p.stdout.readline())
    yield p, port
    p.kill()
    p.wait()


def launch(port: int) -> InstanceLaunch:
    return InstanceLaunch(instance_id="m-0", model="m", replica=0, fingerprint="fp", served_names=("m",),
                          partitions=("0.0",), hip_indices=(0,), memory_bytes_per_rank=1, tp=1,
                          argv=(sys.executable, "-c", "import time; time.sleep(60)", "--port", str(port)),
                          env=(), port=port, url=f"http://127.0.0.1:{port}")


def test_listener_ownership_from_proc(intruder):
    proc, port = intruder
    assert listener_belongs_to(port, [proc.pid]) is True
    import os
    assert listener_belongs_to(port, [os.getpid()]) is False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert listener_belongs_to(free, [proc.pid]) is None  # nobody listens: unknown, not "foreign"


def test_intruder_answering_health_never_makes_the_instance_ready(tmp_path, intruder):
    _, port = intruder
    sup = Supervisor(VllmSettings(max_restarts=5, backoff_initial_s=30), log_dir=tmp_path, health_checker=http_health)
    sup.listener_check = listener_guard
    sup.add(launch(port))
    done = threading.Event()
    try:
        for _ in range(200):
            sup.tick()
            if sup.state_of("m-0") in (InstanceState.BACKOFF, InstanceState.READY, InstanceState.FAILED):
                break
            done.wait(0.02)
        st = sup.statuses()[0]
        assert st.state == InstanceState.BACKOFF, st
        assert "listener is not this instance's process group" in st.last_error
    finally:
        sup.stop_many(["m-0"])
        for _ in range(100):
            sup.tick()
            if sup.state_of("m-0") == InstanceState.STOPPED:
                break
            done.wait(0.02)


def test_taken_port_is_reallocated_before_spawn(tmp_path, intruder):
    _, port = intruder
    ports = PortAllocator((port, port + 50), "127.0.0.1")
    ports.reserve(port)
    moved = port_guard(ports, tmp_path / "state")(launch(port))
    assert moved.port != port and ports.assigned == {moved.port}
    assert moved.argv[-2:] == ("--port", str(moved.port)) and moved.url == f"http://127.0.0.1:{moved.port}"
    assert dict(moved.env)["GPU_SHARING_INSTANCE"] == "m-0" and f'"port":{moved.port}' in dict(moved.env)[
        "GPU_SHARING_LAUNCH"]
    same = port_guard(ports, tmp_path / "state")(moved)
    assert same is moved  # a free port is kept
