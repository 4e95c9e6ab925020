"""Read queries over costs and budget, shared by the admin API, the admin site, the commands and
the dashboard, so their numbers cannot disagree. Every function runs a fixed number of queries
(aggregation happens in SQL), however many ledger rows there are."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db.models import Count, F, Sum
from django.utils import timezone

from common.clock import next_reset, today

from .models import (
    AICostRecord,
    DailyBudget,
    DailyCostTotal,
    ProviderBreaker,
    budget_default_limit,
)
from .money import ZERO

RECENT_OPERATIONS = 50
PERCENT_PLACES = Decimal("0.01")


def percent_of(spent: Decimal, limit: Decimal) -> Decimal:
    """`spent` as a percentage of `limit`, 2 places; a zero limit counts as 100 % used."""
    if limit <= 0:
        return Decimal("100.00")
    return (spent * 100 / limit).quantize(PERCENT_PLACES, rounding=ROUND_HALF_EVEN)


def budget_open_reason(*, paused: bool) -> str:
    """Why an open budget breaker is open (whether it is open: models.budget_open_condition)."""
    return "budget_paused" if paused else "budget_exhausted"


@dataclass(frozen=True)
class BudgetSnapshot:
    day: dt.date
    limit_cents: Decimal
    limit_overridden: bool
    spent_cents: Decimal
    reserved_cents: Decimal
    operation_count: int
    paused: bool
    opened_at: dt.datetime | None
    alerted_percent: int
    is_open: bool
    exhausted_at: dt.datetime | None

    @property
    def state(self) -> str:
        return "open" if self.is_open else "closed"

    @property
    def open_reason(self) -> str | None:
        """Why the breaker is open: "budget_paused" or "budget_exhausted"; None when closed."""
        return budget_open_reason(paused=self.paused) if self.is_open else None

    @property
    def percent_used(self) -> Decimal:
        return percent_of(self.spent_cents, self.limit_cents)

    @property
    def remaining_cents(self) -> Decimal:
        return max(ZERO, self.limit_cents - self.spent_cents - self.reserved_cents)


def budget_snapshot(*, day: dt.date | None = None) -> BudgetSnapshot:
    """The budget of `day` (default today) as every process sees it, its breaker state computed
    by the database (`budget_open_condition`). The day's row is created first if it is missing
    (one idempotent insert), so a new day reads exactly like the rows that will follow it."""
    day = day or today()
    DailyBudget.objects.ensure(day)
    row = DailyBudget.objects.with_state().get(day=day)
    return BudgetSnapshot(
        day=day,
        limit_cents=row.effective_limit_cents,
        limit_overridden=row.limit_overridden,
        spent_cents=row.spent_cents,
        reserved_cents=row.reserved_cents,
        operation_count=row.operation_count,
        paused=row.paused,
        opened_at=row.opened_at,
        alerted_percent=row.alerted_percent,
        is_open=row.is_open,
        exhausted_at=row.exhausted_at,
    )


def provider_breaker_snapshot() -> dict:
    """`{state, since, consecutiveFailures}` of the provider breaker. One query."""
    breaker = ProviderBreaker.objects.filter(name="default").first()
    if breaker is None:
        return {"state": "closed", "since": None, "consecutiveFailures": 0}
    return {
        "state": breaker.state,
        "since": breaker.since,
        "consecutiveFailures": breaker.consecutive_failures,
    }


def _totals() -> dict:
    """Aggregates of the daily roll-ups per group (a group always has rows, so no NULL)."""
    return {
        "count": Sum("count"),
        "inputTokens": Sum("input_tokens"),
        "cachedTokens": Sum("cached_tokens"),
        "outputTokens": Sum("output_tokens"),
        "totalCents": Sum("cost_cents"),
    }


def _ledger_totals() -> dict:
    """The same aggregates over ledger rows (for groupings the roll-ups don't keep)."""
    return {
        "count": Count("id"),
        "inputTokens": Sum("input_tokens"),
        "cachedTokens": Sum("cached_tokens"),
        "outputTokens": Sum("output_tokens"),
        "totalCents": Sum("cost_cents"),
    }


def _with_total_tokens(row: dict) -> dict:
    row["totalTokens"] = row["inputTokens"] + row["outputTokens"]
    return row


def cost_totals_by_operation(*, day: dt.date) -> list[dict]:
    """The day's ledger per operation: `[{operation, count, totalTokens, totalCents, ...}]`,
    from the daily roll-ups (equal to the ledger's sums)."""
    rows = (
        DailyCostTotal.objects.filter(day=day)
        .values("operation")
        .annotate(**_totals())
        .order_by("operation")
    )
    return [_with_total_tokens(dict(row)) for row in rows]


def cost_records_recent(*, limit: int = RECENT_OPERATIONS) -> list[dict]:
    """The latest ledger rows, newest first, as API dicts. One query."""
    rows = AICostRecord.objects.order_by("-created_at", "-id").values(
        "id",
        "operation",
        "provider",
        "model",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "cost_cents",
        "reconciled",
        "user_id",
        "memory_id",
        "day",
        "created_at",
    )[:limit]
    return [
        {
            "id": row["id"],
            "operation": row["operation"],
            "provider": row["provider"],
            "model": row["model"],
            "inputTokens": row["input_tokens"],
            "cachedTokens": row["cached_tokens"],
            "outputTokens": row["output_tokens"],
            "tokens": row["input_tokens"] + row["output_tokens"],
            "costCents": row["cost_cents"],
            "reconciled": row["reconciled"],
            "userId": row["user_id"],
            "memoryId": row["memory_id"],
            "day": row["day"],
            "createdAt": row["created_at"],
        }
        for row in rows
    ]


def ai_cost_tracking() -> dict:
    """Body of GET /admin/ai-cost-tracking: today's spend, per operation, recent calls."""
    budget = budget_snapshot()
    return {
        "dailySpend": {
            "totalCents": budget.spent_cents,
            "percentUsed": budget.percent_used,
            "operationCount": budget.operation_count,
            "circuitState": budget.state,
            "budgetCents": budget.limit_cents,
            "reservedCents": budget.reserved_cents,
            "day": budget.day,
        },
        "todayCostsByOperation": cost_totals_by_operation(day=budget.day),
        "recentOperations": cost_records_recent(),
        "timestamp": timezone.now(),
    }


def circuit_breaker_status() -> dict:
    """Body of GET /admin/circuit-breaker: both breakers and today's budget."""
    budget = budget_snapshot()
    return {
        "state": budget.state,
        "dailySpendCents": budget.spent_cents,
        "percentUsed": budget.percent_used,
        "operationCount": budget.operation_count,
        "timestamp": timezone.now(),
        "budgetCents": budget.limit_cents,
        "budgetOverridden": budget.limit_overridden,
        "reservedCents": budget.reserved_cents,
        "remainingCents": budget.remaining_cents,
        "paused": budget.paused,
        "openReason": budget.open_reason,
        "exhaustedAt": budget.exhausted_at,
        "openedAt": budget.opened_at,
        "day": budget.day,
        "timezone": settings.AI_BUDGET_TIMEZONE,
        "resetsAt": next_reset(),
        "providerBreaker": provider_breaker_snapshot(),
    }


def cost_rows(*, start: dt.date, end: dt.date) -> list[dict]:
    """Ledger totals per (day, operation, provider, model) from `start` to `end` inclusive,
    oldest day first, from the daily roll-ups. One query."""
    rows = (
        DailyCostTotal.objects.filter(day__gte=start, day__lte=end)
        .values("day", "operation", "provider", "model")
        .annotate(**_totals())
        .order_by("day", "operation", "provider", "model")
    )
    return [_with_total_tokens(dict(row)) for row in rows]


def _merge(rows: Iterable[dict], keys: tuple[str, ...]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        into = merged.setdefault(
            key,
            {
                **{k: row[k] for k in keys},
                "count": 0,
                "totalTokens": 0,
                "totalCents": ZERO,
            },
        )
        into["count"] += row["count"]
        into["totalTokens"] += row["totalTokens"]
        into["totalCents"] += row["totalCents"]
    return [merged[key] for key in sorted(merged)]


def costs_daily(*, days: int = 30, end: dt.date | None = None) -> dict:
    """Per-day totals for the `days` budget days up to `end` (default today), by operation and
    by model, every day listed (zeros included), oldest first. Two queries."""
    end = end or today()
    start = end - dt.timedelta(days=days - 1)
    rows = cost_rows(start=start, end=end)
    budgets = {
        row.day: row.effective_limit_cents
        for row in DailyBudget.objects.with_state().filter(day__gte=start, day__lte=end)
    }
    by_day: dict[dt.date, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["day"], []).append(row)
    daily = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        day_rows = by_day.get(day, [])
        limit = budgets.get(day)
        if limit is None and day == today():
            limit = budget_default_limit()
        daily.append(
            {
                "day": day,
                "budgetCents": limit,
                "totalCents": sum((r["totalCents"] for r in day_rows), ZERO),
                "operationCount": sum(r["count"] for r in day_rows),
                "totalTokens": sum(r["totalTokens"] for r in day_rows),
                "byOperation": _merge(day_rows, ("operation",)),
                "byModel": _merge(day_rows, ("provider", "model")),
            }
        )
    return {
        "days": days,
        "startDay": start,
        "endDay": end,
        "timezone": settings.AI_BUDGET_TIMEZONE,
        "totalCents": sum((d["totalCents"] for d in daily), ZERO),
        "operationCount": sum(d["operationCount"] for d in daily),
        "totalTokens": sum(d["totalTokens"] for d in daily),
        "daily": daily,
    }


REPORT_GROUPS = {
    "operation": ("operation",),
    "model": ("provider", "model"),
    "user": ("user_id", "user__email"),
    "day": ("day",),
}


def cost_totals(*, start: dt.date, end: dt.date, by: str) -> list[dict]:
    """Ledger totals from `start` to `end` inclusive grouped `by` operation, model, user or day,
    most expensive first. One query."""
    keys = REPORT_GROUPS[by]
    # Per-user totals come from the ledger; the roll-ups keep day, operation and model.
    source, totals = (
        (AICostRecord, _ledger_totals()) if by == "user" else (DailyCostTotal, _totals())
    )
    rows = (
        source.objects.filter(day__gte=start, day__lte=end)
        .values(*keys)
        .annotate(**totals)
        .order_by(F("totalCents").desc(), *keys)
    )
    return [_with_total_tokens(dict(row)) for row in rows]
