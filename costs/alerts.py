"""Alerts about AI costs, raised through alerting.alert_send: the budget thresholds and users'
daily limits (receivers of the costs signals, connected in CostsConfig.ready), the provider
breaker's openings, and `incident_sync`, which raises a critical condition once per outage and
its recovery once.

Receivers run after the costs transaction commits (costs.signals.send_on_commit, robustly):
an alert that cannot be written is logged there and never undoes the bookkeeping."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from alerting.models import Alert, Severity
from alerting.services import alert_send
from common.clock import day_start

from .selectors import percent_of, provider_breaker_snapshot

logger = logging.getLogger(__name__)

BUDGET_THRESHOLD = "budget_threshold"
USER_LIMIT_REACHED = "user_limit_reached"
PROVIDER_BREAKER_OPEN = "provider_breaker_open"
RECOVERED_SUFFIX = "_recovered"

_TWO_PLACES = Decimal("0.01")


def _cents_text(value: Decimal) -> str:
    return f"{Decimal(value).quantize(_TWO_PLACES)}¢"


def _resets_at(day: dt.date) -> dt.datetime:
    return day_start(day + dt.timedelta(days=1))


# --- budget thresholds --------------------------------------------------------------------------


def budget_threshold_alert(
    sender,
    *,
    day: dt.date,
    percent: int,
    spent_cents: Decimal,
    limit_cents: Decimal,
    exhausted: bool = False,
    **kwargs,
) -> Alert | None:
    """Receiver of budget_threshold_crossed: a warning below 100 %, critical from 100 % (the
    budget breaker opens). Once per budget day and threshold: the key is unique, so a signal
    repeated by another process is a no-op."""
    used = percent_of(spent_cents, limit_cents)
    resets_at = _resets_at(day)
    if percent >= 100:
        severity = Severity.CRITICAL
        title = f"AI budget {percent}% used: the budget breaker is open"
        if exhausted and spent_cents < limit_cents:
            # Declared exhausted: the rest of the budget cannot cover another call.
            title = f"AI budget exhausted at {used} %: the budget breaker is open"
        message = (
            f"Today's AI spend is {_cents_text(spent_cents)} of {_cents_text(limit_cents)} "
            f"({used} %). AI calls are stopped and new enrichments wait until the daily reset at "
            f"{resets_at.isoformat()}, or until staff raise today's limit."
        )
    else:
        severity = Severity.WARNING
        title = f"AI budget {percent}% used"
        message = (
            f"Today's AI spend is {_cents_text(spent_cents)} of {_cents_text(limit_cents)} "
            f"({used} %). The budget resets at {resets_at.isoformat()}."
        )
    return alert_send(
        kind=BUDGET_THRESHOLD,
        severity=severity,
        dedup_key=f"budget:{day.isoformat()}:{percent}",
        title=title,
        message=message,
        context={
            "spentCents": spent_cents,
            "limitCents": limit_cents,
            "percentUsed": used,
            "thresholdPercent": percent,
            "day": day,
            "resetsAt": resets_at,
        },
    )


# --- users' daily limits ------------------------------------------------------------------------

_LIMIT_TEXT = {
    "memories": (
        "created {value} memories today, their daily limit; "
        "new memories are refused (429) until the reset at {resets}."
    ),
    "enrichments": (
        "had {value} memories enriched today, their daily limit; "
        "their further memories wait (deferred) until the reset at {resets}."
    ),
    "cost": (
        "used {value} of AI today, their daily cost limit; "
        "their further memories wait (deferred) until the reset at {resets}."
    ),
}


def user_limit_alert(sender, *, user_id: int, limit: str, day: dt.date, **kwargs) -> Alert | None:
    """Receiver of user_limit_reached: info, once per user, limit and budget day."""
    from accounts.models import User

    from .usage import user_limits

    user = User.objects.filter(pk=user_id).first()
    email = user.email if user is not None else f"user {user_id}"
    value: Decimal | int | None = None
    if user is not None:
        memories, enrichments, cost = user_limits(user)
        value = {"memories": memories, "enrichments": enrichments, "cost": cost}.get(limit)
    shown = _cents_text(value) if limit == "cost" and value is not None else value
    resets_at = _resets_at(day)
    template = _LIMIT_TEXT.get(limit, "reached their daily {limit} limit ({value}).")
    return alert_send(
        kind=USER_LIMIT_REACHED,
        severity=Severity.INFO,
        dedup_key=f"user-limit:{user_id}:{limit}:{day.isoformat()}",
        title=f"{email} reached the daily {limit} limit",
        message=f"{email} "
        + template.format(value=shown, limit=limit, resets=resets_at.isoformat()),
        context={
            "userId": user_id,
            "email": email,
            "limit": limit,
            "limitValue": value,
            "day": day,
            "resetsAt": resets_at,
        },
    )


# --- incidents: a critical condition, raised once per outage, recovered once ----------------------


@dataclass(frozen=True)
class Condition:
    """A critical condition that holds now, with the words and numbers of its alert."""

    title: str
    message: str
    context: dict = field(default_factory=dict)


def _incident_number(alert: Alert | None) -> int:
    if alert is None:
        return 0
    try:
        return int(alert.dedup_key.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def recovery_key(incident_key: str) -> str:
    return f"{incident_key}:recovered"


def incident_sync(
    *,
    kind: str,
    key_prefix: str,
    check: Callable[[], Condition | None],
    cleared: str,
) -> str:
    """Bring the alerts of one critical condition in line with the world, using the alert rows
    themselves as the state: an incident is open while its alert (`<key_prefix>:<n>`) has no
    recovery (`<key_prefix>:<n>:recovered`, kind `<kind>_recovered`, info).

    - holds, no open incident: raise incident n + 1 (critical) -> "raised";
    - cleared, an incident open: raise its recovery -> "recovered";
    - otherwise nothing: "holding" (still open) or "ok".

    Safe with any number of processes at once: racing checkers compute the same next key, so the
    unique dedup key lets one through; a checker working from a stale reading computes a key
    that is already used. The incident state is read BEFORE the condition, so a recovery is only
    ever raised on a reading taken after the incident's own."""
    latest = (
        Alert.objects.filter(kind=kind, dedup_key__startswith=f"{key_prefix}:")
        .order_by("-id")
        .only("id", "dedup_key", "title", "created_at")
        .first()
    )
    is_open = (
        latest is not None
        and not Alert.objects.filter(dedup_key=recovery_key(latest.dedup_key)).exists()
    )
    condition = check()
    if condition is not None:
        if is_open:
            return "holding"
        number = _incident_number(latest) + 1
        alert = alert_send(
            kind=kind,
            severity=Severity.CRITICAL,
            dedup_key=f"{key_prefix}:{number}",
            title=condition.title,
            message=condition.message,
            context={**condition.context, "incident": number},
        )
        return "raised" if alert is not None else "holding"
    if not is_open:
        return "ok"
    lasted = timezone.now() - latest.created_at
    minutes = max(0, int(lasted.total_seconds() // 60))
    alert = alert_send(
        kind=f"{kind}{RECOVERED_SUFFIX}",
        severity=Severity.INFO,
        dedup_key=recovery_key(latest.dedup_key),
        title=f"Recovered: {latest.title}",
        message=f"{cleared} It was raised {minutes} min ago ({latest.dedup_key}).",
        context={
            "incident": _incident_number(latest),
            "incidentKey": latest.dedup_key,
            "raisedAt": latest.created_at,
            "minutes": minutes,
        },
    )
    return "recovered" if alert is not None else "ok"


# --- the provider breaker -----------------------------------------------------------------------


def _provider_breaker_condition() -> Condition | None:
    breaker = provider_breaker_snapshot()
    if breaker["state"] == "closed":
        return None
    return Condition(
        title="AI provider breaker open",
        message=(
            f"After {breaker['consecutiveFailures']} consecutive AI-provider failures, AI calls "
            f"are stopped and jobs are deferred; one probe call is let through every "
            f"{settings.AI_PROVIDER_COOLDOWN_SECONDS} s and closes the breaker when it succeeds. "
            f"State now: {breaker['state']} since {breaker['since'].isoformat()}."
        ),
        context={
            "state": breaker["state"],
            "since": breaker["since"],
            "consecutiveFailures": breaker["consecutiveFailures"],
            "cooldownSeconds": settings.AI_PROVIDER_COOLDOWN_SECONDS,
        },
    )


def provider_breaker_sync() -> str:
    """The provider-breaker rule: critical once per opening (closed -> open, however many
    open/half-open probe cycles follow), a recovery when it is closed again. Run at every
    breaker transition (the signal) and by the beat health check (a backstop for a signal lost
    with its process)."""
    return incident_sync(
        kind=PROVIDER_BREAKER_OPEN,
        key_prefix="provider-breaker-open",
        check=_provider_breaker_condition,
        cleared="The AI provider breaker is closed again: AI calls go through.",
    )


def provider_breaker_alert(sender, *, state: str, previous: str, **kwargs) -> str:
    """Receiver of provider_breaker_changed: alert at the moment the breaker opens, and the
    recovery at the moment it closes."""
    return provider_breaker_sync()
