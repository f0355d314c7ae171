"""Liveness that means something: the worker thread's last completed step, not the event loop's.

Why: the event loop serves HTTP and drives the schedule, so it keeps answering while
the one worker thread is stuck (a hung amdsmi call, a blocked process wait). A
watchdog ping or a /healthz "ok" from the loop then hides a daemon that reconciles
nothing. Here every completed worker step (supervision tick, reconcile pass, and
each progress line of a long step such as a driver reload) is a beat; the systemd
watchdog is pinged, and /healthz says ok, only while the last beat is recent.

The bound is generous on purpose (a repartition may wait stop_grace_s for a stop and
up to a minute for VRAM release between two progress lines): a false "stuck" gets the
daemon restarted by systemd, which is worse than a late one.
"""

from __future__ import annotations

import time
from typing import Any, Callable

DEFAULT_BOUND_S = 180.0


class WorkerLiveness:
    def __init__(self, clock: Callable[[], float] = time.monotonic, bound_s: float = DEFAULT_BOUND_S):
        self.clock = clock
        self.bound_s = bound_s
        self.last_beat = clock()
        self._step_bound_s = bound_s

    def beat(self, step_bound_s: float | None = None) -> None:
        """A step completed. ``step_bound_s``: the next step may legitimately be silent that long (one
        ``modprobe`` of a driver reload runs up to node.driver_reload_timeout_s without a progress line)."""
        self.last_beat = self.clock()
        self._step_bound_s = max(self.bound_s, step_bound_s or 0.0)

    def age_s(self) -> float:
        return max(0.0, self.clock() - self.last_beat)

    @property
    def alive(self) -> bool:
        return self.age_s() <= self._step_bound_s

    def health(self) -> dict[str, Any]:
        """The /healthz body: ok only while the worker completed a step within the bound."""
        age = self.age_s()
        body: dict[str, Any] = {"ok": age <= self._step_bound_s, "worker_last_step_age_s": round(age, 3)}
        if not body["ok"]:
            body["error"] = (f"the reconcile worker has completed nothing for {age:.0f}s "
                             f"(bound {self._step_bound_s:g}s)")
        return body


__all__ = ["DEFAULT_BOUND_S", "WorkerLiveness"]
