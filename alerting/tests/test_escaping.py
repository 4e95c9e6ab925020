"""User-derived text (here a self-registered email address) cannot inject markup: Slack mrkdwn
control characters and HTML are escaped, in one place (alerting.channels.alert_text)."""

from __future__ import annotations

import pytest

from alerting.services import alert_deliver, alert_send

pytestmark = pytest.mark.django_db

HOSTILE = '"<!channel><https://evil.example/r|Click> & co"@evil.example'


def hostile_alert():
    # The shape of the daily-limit alert (costs.alerts), with the address everywhere it goes.
    return alert_send(
        kind="user_limit_reached",
        severity="info",
        dedup_key=f"user-limit:{HOSTILE}:memories:2026-11-28",
        title=f"{HOSTILE} reached the daily memories limit",
        message=f"{HOSTILE} created 100 memories today, their daily limit.",
        context={"email": HOSTILE, HOSTILE: "as a label too"},
    )


def test_it_escapes_user_text_for_slack_mrkdwn(slack):
    alert = hostile_alert()

    assert alert_deliver(alert_id=alert.pk) == "delivered"

    text = slack.requests[0]["body"]["text"]
    assert "<!channel>" not in text
    assert "<https://evil.example" not in text
    escaped = "&lt;!channel&gt;&lt;https://evil.example/r|Click&gt; &amp; co"
    # Title, message, context value, context label and key: five places, all escaped.
    assert text.count(escaped) == 5
    # The only link left is our own.
    assert text.count("<") == 1
    assert "<https://mc.example.com/admin/dashboard/|Open the dashboard>" in text


def test_it_escapes_user_text_in_the_html_email_and_keeps_the_text_part_plain(smtp):
    alert = hostile_alert()

    assert alert_deliver(alert_id=alert.pk) == "delivered"

    message = smtp.messages[0][2]
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "<!channel>" not in html and "<https://evil.example" not in html
    assert "&lt;!channel&gt;&lt;https://evil.example/r|Click&gt; &amp; co" in html
    # Escaped once, not twice.
    assert "&amp;lt;" not in html
    # Plain text is not markup: the address reads as it is.
    assert HOSTILE in text
    assert "&lt;" not in text
