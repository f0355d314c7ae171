"""Where the daemon's events go: one log line each (text or JSON), the recent list for /status, counters.

Why one subscriber for all three: the log, ``/status`` and the metrics then never disagree
about what happened. The stream itself (``runtime/events.py``) stays open for other
subscribers (demand-driven serving reads the same events).
"""

from __future__ import annotations

import collections
import logging
import threading

from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.runtime.events import Event, EventKind, EventStream

MAX_EVENTS = 200
log = logging.getLogger("gpu_sharing.events")


class EventLog:
    """Subscribe with ``EventLog(stream, metrics)``; ``recent()`` is what /status shows."""

    def __init__(self, stream: EventStream, metrics: DaemonMetrics, *, json_lines: bool = False,
                 max_events: int = MAX_EVENTS):
        self.metrics = metrics
        self.json_lines = json_lines
        self._recent: collections.deque[dict] = collections.deque(maxlen=max_events)
        self._lock = threading.Lock()
        metrics.declare_event_kinds(k.value for k in EventKind)
        stream.subscribe(self.record)

    def record(self, event: Event) -> None:
        with self._lock:
            self._recent.append(event.as_dict())
        (log.warning if event.warning else log.info)("%s", event.json_line() if self.json_lines else event.line())
        m = self.metrics
        m.events.labels(kind=event.kind.value).inc()
        if event.kind == EventKind.CRASH and event.model:
            m.instance_crashes.labels(model=event.model).inc()
        elif event.kind == EventKind.RESTART and event.instance_id:
            m.instance_restarts.labels(instance=event.instance_id, model=event.model).inc()

    def recent(self, n: int = MAX_EVENTS) -> list[dict]:
        with self._lock:
            return list(self._recent)[-n:]
