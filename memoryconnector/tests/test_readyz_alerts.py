"""/readyz says whether alerts reach anyone beyond the log; that is information, never a reason
to be unready."""

from __future__ import annotations

import pytest

from alerting.tests import conftest as alerting_fixtures

pytestmark = pytest.mark.django_db

# No channel configured unless a test configures one (the alerting tests' autouse fixture).
_no_channels_configured = alerting_fixtures._no_channels_configured


def test_readyz_says_alerts_reach_the_log_only_and_stays_ready(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert "alerts" not in body["checks"]
    assert body["details"] == {
        "alerts": "no channel configured (log only)",
        "alertChannels": ["log"],
    }


def test_readyz_names_the_configured_alert_channels(anon, settings):
    settings.SMTP_HOST = "smtp.example.com"
    settings.ADMIN_EMAIL = "ops@example.com"
    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T0/B0/secret"
    body = anon.get("/readyz").json()
    assert body["details"] == {"alerts": "ok", "alertChannels": ["email", "slack", "log"]}
    assert "secret" not in str(body)
