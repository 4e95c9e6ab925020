"""What the dashboard and /readyz read: which channels are configured."""

from __future__ import annotations

from alerting.selectors import alerting_configured, channels_status


def test_it_says_no_alert_channel_is_configured_by_default():
    assert alerting_configured() is False
    assert channels_status() == [
        {"name": "email", "configured": False, "missing": "SMTP_HOST and ADMIN_EMAIL"},
        {
            "name": "slack",
            "configured": False,
            "missing": "SLACK_BOT_TOKEN and SLACK_CHANNEL_ALERTS, or SLACK_WEBHOOK_URL",
        },
        {"name": "log", "configured": True, "missing": ""},
    ]


def test_it_needs_both_an_smtp_host_and_a_recipient_for_email(settings):
    settings.SMTP_HOST = "smtp.example.com"
    assert alerting_configured() is False
    settings.ADMIN_EMAIL = "ops@example.com"
    assert alerting_configured() is True
    assert channels_status()[0] == {"name": "email", "configured": True, "missing": ""}


def test_slack_is_configured_by_a_token_and_a_channel_or_by_a_webhook(settings):
    settings.SLACK_BOT_TOKEN = "xoxb-1-2-3"
    assert alerting_configured() is False
    settings.SLACK_CHANNEL_AI_COSTS = "#ai-costs"
    assert alerting_configured() is True
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/X"
    assert channels_status()[1]["configured"] is True
