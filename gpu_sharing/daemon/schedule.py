"""Schedule windows: a model with ``schedule:`` is served only inside its window.

Outside the window its replicas count as 0, so its room goes to other models.
Days use cron day-of-week syntax (mon-fri, sat,sun); times are HH:MM, end exclusive
("24:00" = end of day); the timezone defaults to the host's.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gpu_sharing.config.schema import Config, ScheduleWindow

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _days(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.lower().split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            i, j = DAYS.index(a[:3]), DAYS.index(b[:3])
            out.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part:
            out.add(DAYS.index(part[:3]))
    return out


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def window_open(window: ScheduleWindow, now: datetime | None = None) -> bool:
    tz = ZoneInfo(window.timezone) if window.timezone else None
    now = (now.astimezone(tz) if tz and now else now) or datetime.now(tz)
    minute = now.hour * 60 + now.minute
    start, end = _minutes(window.start), _minutes(window.end)
    if now.weekday() not in _days(window.days):
        return False
    return start <= minute < end if start <= end else minute >= start or minute < end


def active_models(config: Config, now: datetime | None = None) -> dict[str, bool]:
    return {m.name: (m.schedule is None or window_open(m.schedule, now)) for m in config.models}
