"""0002: alerts recorded as delivered that only the log had become log_only."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.utils import timezone

from alerting.models import Alert, AlertStatus

pytestmark = pytest.mark.django_db

migration = importlib.import_module("alerting.migrations.0002_alert_status_log_only")


def make(key: str, status: str, channels: list[str]) -> Alert:
    return Alert.objects.create(
        kind="test",
        severity="info",
        dedup_key=key,
        title=key,
        status=status,
        delivered_channels=channels,
        delivered_at=timezone.now() if status == AlertStatus.DELIVERED else None,
    )


def test_it_turns_alerts_only_the_log_had_into_log_only():
    only_log = make("only-log", AlertStatus.DELIVERED, ["log"])
    emailed = make("emailed", AlertStatus.DELIVERED, ["email", "log"])
    make("slacked", AlertStatus.DELIVERED, ["slack"])
    make("pending", AlertStatus.PENDING, [])

    migration.mark_log_only(apps, None)

    statuses = dict(Alert.objects.values_list("dedup_key", "status"))
    assert statuses == {
        "only-log": AlertStatus.LOG_ONLY,
        "emailed": AlertStatus.DELIVERED,
        "slacked": AlertStatus.DELIVERED,
        "pending": AlertStatus.PENDING,
    }
    only_log.refresh_from_db()
    emailed.refresh_from_db()
    assert only_log.delivered_at is None and emailed.delivered_at is not None
