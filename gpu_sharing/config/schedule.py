"""Schedule windows: a model with ``schedule:`` is served only inside its window.

Why APScheduler's ``CronTrigger``: it is a real cron parser (the one the daemon's
jobs already use), so ``days`` accepts every day-of-week form it accepts (``mon-fri``,
``sat,sun``, ``*/2``, ``0-4``) and rejects the rest at ``validate`` time, instead of
a hand-written parser that passed validation and crashed ``run``. Numbers follow
APScheduler, not crontab: 0 is Monday, 6 is Sunday (``1-5`` is Tuesday to Saturday).

Times are HH:MM, the end exclusive ("24:00" = end of day); a window whose end is
before its start runs over midnight. The timezone defaults to the host's.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Iterable, Mapping, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger


class ScheduleWindow(Protocol):
    """model_schema.ScheduleWindow (the schema validates with this module, so it cannot be imported here)."""

    days: str
    start: str
    end: str
    timezone: str | None


class ScheduledModel(Protocol):
    name: str
    schedule: ScheduleWindow | None


class ScheduledConfig(Protocol):
    models: Iterable[ScheduledModel]


def parse_timezone(name: str) -> tzinfo:
    """ZoneInfo for an IANA name; ValueError naming the value otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown timezone {name!r} (an IANA name such as Europe/Berlin or UTC)") from e


@lru_cache(maxsize=256)
def day_of_week_field(days: str):
    """The parsed day-of-week field of CronTrigger; ValueError with CronTrigger's own message."""
    try:
        trigger = CronTrigger(day_of_week=days, timezone="UTC")
    except ValueError as e:
        raise ValueError(f"days {days!r}: {e} (cron day-of-week: mon-fri, sat,sun, 0-4 with 0 = Monday, *)") from e
    return next(f for f in trigger.fields if f.name == "day_of_week")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def window_open(window: ScheduleWindow, now: datetime) -> bool:
    """Whether ``now`` (timezone-aware, or naive host time) falls inside the window."""
    if window.timezone:
        now = now.astimezone(parse_timezone(window.timezone))
    field = day_of_week_field(window.days)
    if field.get_next_value(now) != field.get_value(now):
        return False
    minute = now.hour * 60 + now.minute
    start, end = _minutes(window.start), _minutes(window.end)
    return start <= minute < end if start <= end else minute >= start or minute < end


def active_models(config: ScheduledConfig, now: datetime) -> Mapping[str, bool]:
    """Model name -> whether its window is open at ``now`` (no schedule: always open)."""
    return {m.name: (m.schedule is None or window_open(m.schedule, now)) for m in config.models}
