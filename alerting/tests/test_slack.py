"""The Slack channel through the real slack_sdk client against a local stub of the Web API."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertStatus, DeliveryStatus
from alerting.services import alert_deliver, alert_send
from alerting.tests.stubs import SLACK_TOKEN, WEBHOOK_PATH

pytestmark = pytest.mark.django_db


def send(kind: str = "queue_pending", key: str = "queue:pending:2026-11-28") -> Alert:
    return alert_send(
        kind=kind,
        severity="critical",
        dedup_key=key,
        title="Over 100 jobs pending",
        message="The enrichment queue is backing up.",
        context={"pending": 142},
    )


def test_it_posts_to_the_alerts_channel_with_the_bot_token(slack):
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "delivered"

    assert len(slack.requests) == 1
    request = slack.requests[0]
    assert request["path"] == "/api/chat.postMessage"
    assert request["headers"]["Authorization"] == f"Bearer {SLACK_TOKEN}"
    assert request["body"]["channel"] == "#alerts"
    text = request["body"]["text"]
    assert "*[CRITICAL] Over 100 jobs pending*" in text
    assert "pending: 142" in text
    assert "https://mc.example.com/admin/dashboard/" in text
    alert.refresh_from_db()
    assert sorted(alert.delivered_channels) == ["log", "slack"]


def test_it_sends_budget_alerts_to_the_ai_costs_channel_when_set(slack, settings):
    settings.SLACK_CHANNEL_AI_COSTS = "#ai-costs"
    budget = send(kind="budget_threshold", key="budget:2026-11-28:75")
    other = send(key="other")

    alert_deliver(alert_id=budget.pk)
    alert_deliver(alert_id=other.pk)

    assert [r["body"]["channel"] for r in slack.requests] == ["#ai-costs", "#alerts"]


def test_it_schedules_the_retry_no_earlier_than_retry_after_when_ratelimited(slack, settings):
    settings.ALERT_RETRY_BASE_SECONDS = 1  # the backoff alone would retry within a second
    slack.reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "120"})
    alert = send()
    before = timezone.now()

    assert alert_deliver(alert_id=alert.pk) == "retry"

    alert.refresh_from_db()
    assert alert.next_attempt_at >= before + dt.timedelta(seconds=120)
    failed = alert.deliveries.get(channel="slack")
    assert failed.status == DeliveryStatus.FAILED
    assert "ratelimited" in failed.error and "120" in failed.error
    # Before Retry-After has passed the alert is not sent again, even if asked.
    assert alert_deliver(alert_id=alert.pk) == "skipped"
    assert len(slack.requests) == 1

    Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())
    assert alert_deliver(alert_id=alert.pk) == "delivered"
    assert len(slack.requests) == 2


def test_it_records_invalid_auth_as_a_failed_attempt(slack):
    slack.reply(200, {"ok": False, "error": "invalid_auth"})
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "retry"

    alert.refresh_from_db()
    assert alert.status == AlertStatus.PENDING and alert.attempts == 1
    failed = alert.deliveries.get(channel="slack")
    assert failed.status == DeliveryStatus.FAILED
    assert failed.error == "slack: invalid_auth (HTTP 200)"
    assert "slack: invalid_auth" in alert.last_error


def test_it_posts_to_an_incoming_webhook_when_no_bot_token_is_set(slack, settings):
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = f"{slack.root}{WEBHOOK_PATH}"
    slack.reply(200, "ok")
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "delivered"

    request = slack.requests[0]
    assert request["path"] == WEBHOOK_PATH
    assert "Authorization" not in request["headers"]
    assert "*[CRITICAL] Over 100 jobs pending*" in request["body"]["text"]


def test_it_records_a_webhook_refusal_as_failed(slack, settings):
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = f"{slack.root}{WEBHOOK_PATH}"
    slack.reply(403, "invalid_token")
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "retry"

    assert alert.deliveries.get(channel="slack").error == "slack webhook: HTTP 403: invalid_token"


def test_it_records_slack_being_unreachable_as_failed(settings):
    settings.SLACK_BOT_TOKEN = SLACK_TOKEN
    settings.SLACK_CHANNEL_ALERTS = "#alerts"  # SLACK_API_URL points at a closed port
    alert = send()

    assert alert_deliver(alert_id=alert.pk) == "retry"

    error = alert.deliveries.get(channel="slack").error
    assert error.startswith("slack: URLError") and "Connection refused" in error
