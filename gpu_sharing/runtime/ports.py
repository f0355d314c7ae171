"""Port allocation for vLLM instances from ``vllm.port_range``.

Why probe with bind: another program (or an instance we adopted, or one a
previous apply left running) may already listen on a port in the range. A port
is handed out only when it is neither assigned by us nor bindable-failed on the
host. The probe binds without SO_REUSEADDR, so a port in TIME_WAIT is skipped
too (vLLM would fail on it the same way).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Iterable

from gpu_sharing.errors import OperationError


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP socket can bind host:port right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out ports from [low, high], skipping assigned and bound ones. Thread-safe."""

    def __init__(self, port_range: tuple[int, int], host: str = "127.0.0.1", *,
                 probe: Callable[[str, int], bool] = port_is_free, assigned: Iterable[int] = ()):
        self.low, self.high = port_range
        self.host = host
        self._probe = probe
        self._assigned: set[int] = set(assigned)
        self._lock = threading.Lock()

    @property
    def assigned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._assigned)

    def reserve(self, port: int) -> None:
        """Mark a port as ours (adopted instance)."""
        with self._lock:
            self._assigned.add(port)

    def allocate(self) -> int:
        with self._lock:
            for port in range(self.low, self.high + 1):
                if port in self._assigned:
                    continue
                if self._probe(self.host, port):
                    self._assigned.add(port)
                    return port
        raise OperationError(f"no free port in vllm.port_range [{self.low}, {self.high}] on {self.host}: "
                             f"{len(self._assigned)} assigned by gpu-sharing, the rest are in use; widen the range")

    def release(self, port: int) -> None:
        with self._lock:
            self._assigned.discard(port)
