"""Passwords, tokens and webhook URLs never reach the logs or the stored delivery errors."""

from __future__ import annotations

import logging

import pytest

from alerting.models import Alert, AlertDelivery
from alerting.services import alert_deliver, alert_send
from alerting.tests.stubs import SLACK_TOKEN, SMTP_PASSWORD, WEBHOOK_PATH

pytestmark = pytest.mark.django_db


def send(key: str) -> Alert:
    return alert_send(
        kind="provider_breaker_open",
        severity="critical",
        dedup_key=key,
        title="AI provider breaker open",
        message="Calls to the AI provider are failing.",
    )


def stored_text() -> str:
    errors = list(AlertDelivery.objects.values_list("error", flat=True))
    errors += list(Alert.objects.values_list("last_error", flat=True))
    return "\n".join(errors)


def logged_text(caplog) -> str:
    # The rendered lines and every attribute of every record (args, extras).
    return caplog.text + "\n".join(repr(vars(record)) for record in caplog.records)


def test_it_keeps_the_smtp_password_out_of_logs_and_stored_errors(smtp_rejecting_login, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="mail.log")  # the stub server's own chatter
    alert = send("k-smtp-auth")

    assert alert_deliver(alert_id=alert.pk) == "retry"

    error = alert.deliveries.get(channel="email").error
    assert "SMTPAuthenticationError" in error and "535" in error
    assert SMTP_PASSWORD not in stored_text()
    assert SMTP_PASSWORD not in logged_text(caplog)


def test_it_scrubs_a_password_that_the_server_echoes_back(smtp, settings, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="mail.log")
    settings.SMTP_PASS = SMTP_PASSWORD
    smtp.handler.refuse_with = f"550 refused; you sent password {SMTP_PASSWORD}"
    alert = send("k-smtp-echo")

    alert_deliver(alert_id=alert.pk)

    error = alert.deliveries.get(channel="email").error
    assert "550 refused" in error and "[redacted]" in error
    assert SMTP_PASSWORD not in stored_text()
    assert SMTP_PASSWORD not in logged_text(caplog)


def test_it_keeps_the_slack_token_out_of_logs_and_stored_errors(slack, caplog):
    caplog.set_level(logging.DEBUG)
    slack.reply(200, {"ok": False, "error": "invalid_auth", "echo": SLACK_TOKEN})
    alert = send("k-slack")

    alert_deliver(alert_id=alert.pk)

    assert "invalid_auth" in stored_text()
    # slack_sdk's debug log was captured (through our scrubbing logger) ...
    assert any(r.name == "alerting.slack_sdk" for r in caplog.records)
    # ... and holds no token.
    assert SLACK_TOKEN not in stored_text()
    assert SLACK_TOKEN not in logged_text(caplog)


def test_it_keeps_the_webhook_url_out_of_logs_and_stored_errors(slack, settings, caplog):
    caplog.set_level(logging.DEBUG)
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = f"{slack.root}{WEBHOOK_PATH}"
    slack.reply(404, f"no_service for {WEBHOOK_PATH}")
    alert = send("k-webhook")

    alert_deliver(alert_id=alert.pk)

    assert "slack webhook: HTTP 404: no_service for [redacted]" in stored_text()
    assert any(r.name == "alerting.slack_sdk" for r in caplog.records)
    for secret in (WEBHOOK_PATH, "webhooksecretXYZ123"):
        assert secret not in stored_text()
        assert secret not in logged_text(caplog)
