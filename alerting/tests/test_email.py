"""The email channel through a real SMTP exchange (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html import unescape

import pytest
from django.utils import timezone

from alerting.channels import smtp_backend
from alerting.models import Alert, AlertStatus, DeliveryStatus
from alerting.services import alert_deliver, alert_send

pytestmark = pytest.mark.django_db


def budget_alert(key: str = "budget:2026-11-28:50") -> Alert:
    return alert_send(
        kind="budget_threshold",
        severity="warning",
        dedup_key=key,
        title="AI budget 50% used",
        message="Half of today's AI budget is spent.",
        context={"spentCents": Decimal("250.500000"), "limitCents": 500, "percentUsed": 50.1},
    )


def due_now(alert: Alert) -> None:
    """The backoff has elapsed (instead of sleeping through it)."""
    Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())


def test_it_sends_an_email_with_a_text_and_an_html_part(smtp):
    alert = budget_alert()

    assert alert_deliver(alert_id=alert.pk) == "delivered"

    assert len(smtp.messages) == 1
    mail_from, rcpt_tos, message = smtp.messages[0]
    assert mail_from == "alerts@mc.example.com"
    assert rcpt_tos == ["ops@example.com", "cto@example.com"]
    assert message["Subject"] == "[Memory Connector] WARNING: AI budget 50% used"
    assert message["To"] == "ops@example.com, cto@example.com"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for part in (text, unescape(html)):
        assert "AI budget 50% used" in part
        assert "Half of today's AI budget is spent." in part
        assert "spentCents" in part and "250.500000" in part
        assert "limitCents" in part and "500" in part
        assert "https://mc.example.com/admin/dashboard/" in part
    assert "<table" in html and "<table" not in text
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DELIVERED and alert.delivered_at is not None
    assert sorted(alert.delivered_channels) == ["email", "log"]
    assert [(d.channel, d.status) for d in alert.deliveries.all()] == [
        ("email", DeliveryStatus.OK),
        ("log", DeliveryStatus.OK),
    ]


def test_it_records_a_failed_attempt_and_retries_later_when_smtp_is_down(smtp_down, settings):
    alert = budget_alert()
    before = timezone.now()

    assert alert_deliver(alert_id=alert.pk) == "retry"

    alert.refresh_from_db()
    assert alert.status == AlertStatus.PENDING
    assert alert.attempts == 1
    # First retry: base 60 s with equal jitter, so between 30 and 60 s from now.
    assert before + dt.timedelta(seconds=30) <= alert.next_attempt_at
    assert alert.next_attempt_at <= timezone.now() + dt.timedelta(seconds=60)
    failed = alert.deliveries.get(channel="email")
    assert failed.status == DeliveryStatus.FAILED
    assert "ConnectionRefusedError" in failed.error
    assert alert.last_error.startswith("email:")
    # The log channel got it: it is not sent again on the retry.
    assert alert.delivered_channels == ["log"]
    # Not due yet: a second run finds nothing to do.
    assert alert_deliver(alert_id=alert.pk) == "skipped"


def test_it_delivers_once_on_a_later_retry_after_a_refusal(smtp):
    smtp.handler.refuse_with = "550 5.7.1 Refused for now"
    alert = budget_alert()

    assert alert_deliver(alert_id=alert.pk) == "retry"
    alert.refresh_from_db()
    assert alert.attempts == 1 and alert.next_attempt_at > timezone.now()
    refused = alert.deliveries.get(channel="email")
    assert refused.status == DeliveryStatus.FAILED
    assert "550" in refused.error and "Refused for now" in refused.error
    assert smtp.messages == []

    smtp.handler.refuse_with = None
    due_now(alert)
    assert alert_deliver(alert_id=alert.pk) == "delivered"
    due_now(alert)
    assert alert_deliver(alert_id=alert.pk) == "skipped"

    assert len(smtp.messages) == 1
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DELIVERED and alert.attempts == 2
    assert [(d.channel, d.status, d.attempt) for d in alert.deliveries.all()] == [
        ("email", DeliveryStatus.FAILED, 1),
        ("log", DeliveryStatus.OK, 1),
        ("email", DeliveryStatus.OK, 2),
    ]


def test_it_backs_off_exponentially_between_attempts(smtp_down, settings):
    settings.ALERT_RETRY_BASE_SECONDS = 10
    alert = budget_alert()
    delays = []
    for _ in range(4):
        due_now(alert)
        started = timezone.now()
        alert_deliver(alert_id=alert.pk)
        alert.refresh_from_db()
        delays.append((alert.next_attempt_at - started).total_seconds())
    # 10, 20, 40, 80 s, each with up to half of it as jitter.
    for attempt, delay in enumerate(delays, start=1):
        full = 10 * 2 ** (attempt - 1)
        assert full / 2 - 1 <= delay <= full + 1, delays


def test_it_gives_up_after_alert_max_attempts_and_keeps_the_alert(smtp_down, settings, caplog):
    settings.ALERT_MAX_ATTEMPTS = 2
    alert = budget_alert()
    assert alert_deliver(alert_id=alert.pk) == "retry"
    due_now(alert)
    with caplog.at_level("ERROR", logger="alerting.services"):
        assert alert_deliver(alert_id=alert.pk) == "failed"

    alert.refresh_from_db()
    assert alert.status == AlertStatus.FAILED and alert.next_attempt_at is None
    assert alert.deliveries.filter(channel="email", status=DeliveryStatus.FAILED).count() == 2
    assert "undelivered after 2 attempts" in caplog.text


@pytest.mark.parametrize(
    ("port", "security", "tls", "ssl"),
    [
        (587, "auto", True, False),
        (465, "auto", False, True),
        (25, "auto", False, False),
        (2525, "starttls", True, False),
    ],
)
def test_it_picks_starttls_or_ssl_from_the_port(settings, port, security, tls, ssl):
    settings.SMTP_HOST = "smtp.example.com"
    settings.SMTP_PORT = port
    settings.SMTP_SECURITY = security
    settings.SMTP_USER = "apikey"
    settings.SMTP_PASS = "secret"
    backend = smtp_backend()
    assert (backend.host, backend.port) == ("smtp.example.com", port)
    assert (backend.use_tls, backend.use_ssl) == (tls, ssl)
    assert (backend.username, backend.password, backend.timeout) == ("apikey", "secret", 5)
