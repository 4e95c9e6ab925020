"""Alert reads for the admin, the dashboard and /readyz: channel configuration, due and recent
alerts."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from .channels import CHANNELS
from .models import Alert, AlertStatus


def channels_status() -> list[dict]:
    """Each channel: `{"name", "configured", "missing"}` (`missing` names the settings to set;
    empty when configured). The log channel is always configured."""
    return [
        {"name": channel.name, "configured": channel.configured(), "missing": channel.missing()}
        for channel in CHANNELS
    ]


def alerting_configured() -> bool:
    """Whether any channel besides the log is configured; False means "no alert channel
    configured": alerts only reach the log."""
    return any(channel.configured() for channel in CHANNELS if channel.delivers)


def alerts_due_ids(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Pending alerts whose next attempt is due and that no live delivery holds, oldest first."""
    now = now or timezone.now()
    return list(
        Alert.objects.filter(status=AlertStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


def alerts_undelivered_count() -> int:
    """Alerts not yet delivered on every channel: pending (being retried) or failed (given up).
    Log-only alerts are done: there was nowhere else to send them."""
    return Alert.objects.filter(status__in=(AlertStatus.PENDING, AlertStatus.FAILED)).count()


def alerts_recent(*, limit: int = 20) -> QuerySet[Alert]:
    return Alert.objects.order_by("-created_at", "-id")[:limit]
