"""Typed events: every transition the supervisor, the reconciler and the daemon make, as one stream.

Why one stream of frozen values: an operator must be able to see (and a Prometheus rule
count) each crash, restart, FAILED, unplaceable model, reload, repartition and VRAM policy
action. Producers call an ``EventSink`` (a plain callable); the daemon's ``EventLog`` fans
each event out to the log (one readable line, or JSON), ``/status`` and metrics counters.
Later consumers (demand-driven serving) subscribe to the same ``EventStream``.

Kind values are stable strings (they are metric label values and /status fields).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Callable


class EventKind(str, Enum):
    STATE = "state"
    """An instance moved between states (from_state -> to_state)."""
    CRASH = "crash"
    """An instance's process exited or was killed unexpectedly (exit_code, cause)."""
    RESTART = "restart"
    """A crashed instance is started again after its backoff."""
    OPERATOR_RESTART = "operator-restart"
    """``gpu-sharing restart``: clears FAILED and the crash history; not a crash."""
    FAILED = "failed"
    """Gave up after too many restarts within the window."""
    UNPLACEABLE = "unplaceable"
    RELOAD = "reload"
    RELOAD_REJECTED = "reload-error"
    """A config reload was rejected (key_path names the first bad key); nothing changed."""
    REPARTITION = "repartition"
    VRAM_POLICY = "vram-over-budget"
    FOREIGN_PROCESS = "foreign-process"
    HOLD = "hold"
    RELEASE = "release"
    ROLLING = "rolling"
    """One step of a rolling replacement of a changed model."""
    ERROR = "error"
    """An observation or apply failure the daemon survived (message says which)."""
    RELOAD_WARNING = "reload-warning"
    """A reload changed API settings that take effect only after a daemon restart."""
    SECURITY_WARNING = "security-warning"
    """The API listens beyond loopback without a token."""
    SCALE_COLD_START = "scale-cold-start"
    """Demand-driven serving (reconcile.autoscale): a held request brings a model from 0 to 1 replica."""
    SCALE_UP = "scale-scale-up"
    SCALE_DOWN = "scale-scale-down"
    SCALE_IDLE_UNLOAD = "scale-idle-unload"
    SCALE_EVICT = "scale-evict"
    """An idle replica of a lower-or-equal-priority model stopped to make room for a held request."""
    DAEMON = "daemon"
    """Daemon lifecycle: start, adopt, stop."""

    def __str__(self) -> str:
        return self.value


WARNING_KINDS = frozenset({EventKind.RELOAD_WARNING, EventKind.SECURITY_WARNING,
                           EventKind.CRASH, EventKind.FAILED, EventKind.UNPLACEABLE, EventKind.RELOAD_REJECTED,
                           EventKind.VRAM_POLICY, EventKind.FOREIGN_PROCESS, EventKind.ERROR})


@dataclass(frozen=True)
class Event:
    kind: EventKind
    message: str
    instance_id: str = ""
    model: str = ""
    from_state: str = ""
    to_state: str = ""
    exit_code: int | None = None
    cause: str = ""
    backoff_s: float | None = None
    key_path: str = ""
    time: float = 0.0
    """Epoch seconds (filled by ``EventStream.emit`` when 0)."""

    @property
    def warning(self) -> bool:
        return self.kind in WARNING_KINDS

    def line(self) -> str:
        """One readable log line: ``crash instance=m-0 model=m: <message>``."""
        who = "".join(f" {k}={v}" for k, v in (("instance", self.instance_id), ("model", self.model)) if v)
        return f"{self.kind.value}{who}: {self.message}"

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in ("", None)}
        d["kind"] = self.kind.value
        return d

    def json_line(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


EventSink = Callable[[Event], None]


def no_events(_event: Event) -> None:
    """The default sink: events go nowhere (one-shot CLI commands)."""


class EventStream:
    """Thread-safe fan-out: ``emit`` stamps the time and calls every subscriber in order.

    A subscriber that raises does not stop the others (a broken log handler must not hide
    a crash from the metrics)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self._subscribers: list[EventSink] = []
        self._lock = threading.Lock()
        self.wall_clock = wall_clock

    def subscribe(self, sink: EventSink) -> None:
        with self._lock:
            self._subscribers.append(sink)

    def emit(self, event: Event) -> None:
        if not event.time:
            event = Event(**{**event.__dict__, "time": self.wall_clock()})
        with self._lock:
            subscribers = list(self._subscribers)
        for sink in subscribers:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - one bad subscriber must not hide the event from the rest
                pass

    __call__ = emit
