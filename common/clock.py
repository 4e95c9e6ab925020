"""The one definition of "today": the budget day in AI_BUDGET_TIMEZONE."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone


def budget_tz() -> ZoneInfo:
    return ZoneInfo(settings.AI_BUDGET_TIMEZONE)


def today() -> dt.date:
    """The current budget day."""
    return timezone.now().astimezone(budget_tz()).date()


def day_start(day: dt.date) -> dt.datetime:
    """The aware instant at which `day` begins in the budget timezone."""
    return dt.datetime.combine(day, dt.time.min, tzinfo=budget_tz())


def next_reset(now: dt.datetime | None = None) -> dt.datetime:
    """The aware instant of the next daily reset (the next midnight in the budget timezone)."""
    now = now or timezone.now()
    local_day = now.astimezone(budget_tz()).date()
    return day_start(local_day + dt.timedelta(days=1))


def seconds_until_reset(now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    return max(1, int((next_reset(now) - now).total_seconds() + 0.999))
