"""alert_send (once per key, enqueue on commit), delivery claims, the retry sweep, resend."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from alerting import tasks
from alerting.models import Alert, AlertStatus, DeliveryStatus
from alerting.selectors import alerts_due_ids, alerts_undelivered_count
from alerting.services import alert_deliver, alert_resend, alert_send, retry_delay

pytestmark = pytest.mark.django_db


def send(key: str = "user-limit:42:2026-11-28", **overrides) -> Alert | None:
    fields = {
        "kind": "user_daily_limit",
        "severity": "info",
        "dedup_key": key,
        "title": "A user reached the daily limit",
        "message": "User 42 created 100 memories today.",
        "context": {"userId": 42, "memoriesCreated": 100},
    }
    return alert_send(**(fields | overrides))


def test_it_creates_an_alert_once_per_dedup_key():
    first = send()
    again = send(title="another title")

    assert first is not None and again is None
    assert Alert.objects.count() == 1
    alert = Alert.objects.get()
    assert alert.title == "A user reached the daily limit"
    assert alert.status == AlertStatus.PENDING and alert.attempts == 0
    assert alert.next_attempt_at is not None


def test_it_keeps_the_callers_transaction_usable_after_a_duplicate():
    send()
    with transaction.atomic():
        assert send() is None
        # The failed insert was rolled back to its savepoint; the transaction goes on.
        assert Alert.objects.count() == 1


def test_it_stores_decimals_and_dates_from_the_context():
    alert = send(context={"spentCents": Decimal("12.345600"), "day": dt.date(2026, 11, 28)})
    alert.refresh_from_db()
    assert alert.context == {"spentCents": "12.345600", "day": "2026-11-28"}


def test_it_refuses_an_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        send(severity="urgent")


def test_it_delivers_in_a_task_enqueued_on_commit(
    django_capture_on_commit_callbacks, eager_celery, caplog
):
    caplog.set_level(logging.INFO, logger="alerting")
    with django_capture_on_commit_callbacks() as callbacks:
        alert = send()
    assert len(callbacks) == 1
    alert.refresh_from_db()
    assert alert.status == AlertStatus.PENDING  # nothing is sent before the commit

    callbacks[0]()  # the commit: deliver_alert.delay(), run in-process

    alert.refresh_from_db()
    assert alert.status == AlertStatus.LOG_ONLY
    # No channel configured: the log has it, at the alert's severity, structured.
    [record] = [r for r in caplog.records if r.name == "alerting"]
    assert record.levelno == logging.INFO
    assert (record.kind, record.severity, record.dedup_key) == (
        "user_daily_limit",
        "info",
        "user-limit:42:2026-11-28",
    )
    assert record.context == {"userId": 42, "memoriesCreated": 100}


def test_it_logs_warnings_and_criticals_at_their_level(caplog):
    with caplog.at_level(logging.INFO, logger="alerting"):
        for severity in ("warning", "critical"):
            alert = send(key=f"k-{severity}", severity=severity)
            alert_deliver(alert_id=alert.pk)
    levels = [r.levelno for r in caplog.records if r.name == "alerting"]
    assert levels == [logging.WARNING, logging.CRITICAL]


def test_it_does_not_send_an_alert_whose_transaction_rolled_back(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                send()
                raise RuntimeError("the caller failed")
    assert callbacks == [] and Alert.objects.count() == 0


def test_it_leaves_the_alert_for_the_sweep_when_the_broker_is_down(
    django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def broker_down(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(tasks.deliver_alert, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        alert = send()  # does not raise

    assert "could not enqueue its delivery (OperationalError)" in caplog.text
    assert alerts_due_ids() == [alert.pk]


def test_the_sweep_delivers_due_alerts_only(eager_celery):
    due = send(key="due")
    later = send(key="later")
    Alert.objects.filter(pk=later.pk).update(
        next_attempt_at=timezone.now() + dt.timedelta(minutes=5)
    )

    assert tasks.alerts_retry_undelivered() == 1

    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == AlertStatus.LOG_ONLY  # no channel configured: the log has it
    assert later.status == AlertStatus.PENDING and later.attempts == 0


def test_a_second_delivery_of_a_claimed_alert_does_nothing():
    alert = send()
    # Another worker holds a live claim.
    Alert.objects.filter(pk=alert.pk).update(
        claim_token="other", claimed_until=timezone.now() + dt.timedelta(minutes=5)
    )
    assert alert_deliver(alert_id=alert.pk) == "skipped"
    assert alerts_due_ids() == []
    assert alert.deliveries.count() == 0


def test_an_alert_claimed_by_a_dead_worker_is_delivered_after_the_lease():
    alert = send()
    Alert.objects.filter(pk=alert.pk).update(
        claim_token="dead", claimed_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert alerts_due_ids() == [alert.pk]
    assert alert_deliver(alert_id=alert.pk) == "log_only"


def test_a_retry_skips_channels_that_already_succeeded(smtp, slack):
    slack.reply(500, {"ok": False, "error": "internal_error"})
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "retry"
    Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())
    assert alert_deliver(alert_id=alert.pk) == "delivered"

    assert len(smtp.messages) == 1 and len(slack.requests) == 2
    assert [(d.channel, d.status, d.attempt) for d in alert.deliveries.all()] == [
        ("email", DeliveryStatus.OK, 1),
        ("slack", DeliveryStatus.FAILED, 1),
        ("log", DeliveryStatus.OK, 1),
        ("slack", DeliveryStatus.OK, 2),
    ]


def test_it_is_log_only_not_delivered_when_no_channel_is_configured():
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "log_only"

    alert.refresh_from_db()
    assert alert.status == AlertStatus.LOG_ONLY
    assert alert.delivered_at is None and alert.next_attempt_at is None
    assert alert.delivered_channels == ["log"]
    assert [(d.channel, d.status) for d in alert.deliveries.all()] == [("log", DeliveryStatus.OK)]
    assert alerts_due_ids() == [] and alerts_undelivered_count() == 0  # done, nothing to retry


def test_it_is_log_only_when_the_configured_channel_does_not_take_this_kind(slack, settings):
    # Slack set up for budget alerts only: a user-limit alert has nowhere to go but the log.
    settings.SLACK_CHANNEL_ALERTS = ""
    settings.SLACK_CHANNEL_AI_COSTS = "#ai-costs"
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "log_only"
    assert slack.requests == []
    budget = send(key="budget:2026-11-28:50", kind="budget_threshold", severity="warning")
    assert alert_deliver(alert_id=budget.pk) == "delivered"
    assert [r["body"]["channel"] for r in slack.requests] == ["#ai-costs"]


def test_it_is_delivered_only_once_a_channel_accepted_it(smtp):
    smtp.handler.refuse_with = "550 5.7.1 Refused"
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "retry"  # the log has it; nobody was told
    alert.refresh_from_db()
    assert alert.status == AlertStatus.PENDING and alert.delivered_at is None

    smtp.handler.refuse_with = None
    Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())
    assert alert_deliver(alert_id=alert.pk) == "delivered"
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DELIVERED and alert.delivered_at is not None
    assert sorted(alert.delivered_channels) == ["email", "log"]


def test_resend_sends_again_on_every_channel(
    smtp, eager_celery, django_capture_on_commit_callbacks
):
    alert = send()
    alert_deliver(alert_id=alert.pk)
    assert len(smtp.messages) == 1

    with django_capture_on_commit_callbacks(execute=True):
        alert_resend(alert=alert)

    alert.refresh_from_db()
    assert alert.status == AlertStatus.DELIVERED and alert.attempts == 1
    assert len(smtp.messages) == 2


def test_undelivered_alerts_are_counted_until_delivered(smtp_down, settings):
    settings.ALERT_MAX_ATTEMPTS = 1
    alert = send()
    assert alerts_undelivered_count() == 1
    assert alert_deliver(alert_id=alert.pk) == "failed"
    assert alerts_undelivered_count() == 1


def test_retry_delay_grows_exponentially_with_jitter_up_to_the_cap(settings):
    settings.ALERT_RETRY_BASE_SECONDS = 60
    settings.ALERT_RETRY_MAX_SECONDS = 600
    for attempts, full in [(1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (20, 600)]:
        delays = {retry_delay(attempts).total_seconds() for _ in range(20)}
        assert all(full / 2 <= d <= full for d in delays), (attempts, delays)
        assert len(delays) > 1  # jittered
    assert retry_delay(1, retry_after=900) == dt.timedelta(seconds=900)
