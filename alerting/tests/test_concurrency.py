"""Many workers at once, on PostgreSQL: one alert row and one email, whatever the race."""

from __future__ import annotations

import pytest

from alerting.models import Alert, AlertStatus
from alerting.services import alert_deliver, alert_send
from common.testing import run_in_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_it_creates_one_alert_and_sends_one_email_when_8_threads_send_it_at_once(
    smtp, eager_celery
):
    def send():
        return alert_send(
            kind="budget_threshold",
            severity="warning",
            dedup_key="budget:2026-11-28:75",
            title="AI budget 75% used",
            message="Three quarters of today's AI budget is spent.",
            context={"percentUsed": 75},
        )

    results = run_in_threads(8, lambda _: send())

    assert sum(result is not None for result in results) == 1
    assert Alert.objects.count() == 1
    # Each sender's commit enqueued (eagerly ran) the delivery; only the creator had one.
    assert len(smtp.messages) == 1
    assert Alert.objects.get().status == AlertStatus.DELIVERED


def test_it_sends_one_email_when_two_deliveries_of_one_alert_race(smtp):
    alert = alert_send(
        kind="worker_heartbeat_missing",
        severity="critical",
        dedup_key="heartbeat:2026-11-28T10",
        title="No worker heartbeat",
        message="Jobs are pending and no worker has reported for 2 minutes.",
    )

    results = run_in_threads(4, lambda _: alert_deliver(alert_id=alert.pk))

    assert sorted(results) == ["delivered", "skipped", "skipped", "skipped"]
    assert len(smtp.messages) == 1
    assert alert.deliveries.filter(channel="email").count() == 1
