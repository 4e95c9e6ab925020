"""`manage.py send_test_alert`: a real test through the chosen or all channels."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from alerting.models import Alert, AlertStatus, DeliveryStatus

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("send_test_alert", *args, stdout=out)
    return out.getvalue()


def test_it_sends_through_every_configured_channel_and_prints_each_outcome(smtp):
    output = run()

    assert "email: ok" in output
    assert "slack: not configured (set SLACK_BOT_TOKEN and SLACK_CHANNEL_ALERTS" in output
    assert "log: ok" in output
    assert len(smtp.messages) == 1
    assert (
        smtp.messages[0][2]["Subject"]
        == "[Memory Connector] INFO: Test alert from Memory Connector"
    )
    alert = Alert.objects.get(kind="test")
    assert alert.status == AlertStatus.DELIVERED and alert.delivered_at is not None
    assert sorted(alert.deliveries.values_list("channel", flat=True)) == ["email", "log"]
    assert f"Recorded as alert #{alert.pk} ({alert.dedup_key}): delivered." in output


def test_it_records_log_only_when_no_channel_is_configured():
    output = run()

    assert "email: not configured" in output and "log: ok" in output
    alert = Alert.objects.get(kind="test")
    assert alert.status == AlertStatus.LOG_ONLY and alert.delivered_at is None
    assert alert.delivered_channels == ["log"]
    assert output.rstrip().endswith(": log_only.")


def test_it_sends_only_through_the_chosen_channel(smtp, slack):
    output = run("--channel", "slack")

    assert output.startswith("slack: ok")
    assert len(slack.requests) == 1 and smtp.messages == []


def test_it_exits_non_zero_when_the_chosen_channel_fails(smtp_down):
    with pytest.raises(CommandError, match="not delivered: email failed"):
        run("--channel", "email")
    alert = Alert.objects.get(kind="test")
    assert alert.status == AlertStatus.FAILED
    assert "ConnectionRefusedError" in alert.deliveries.get().error


def test_it_exits_non_zero_when_the_chosen_channel_is_not_configured():
    with pytest.raises(CommandError, match="slack is not configured"):
        run("--channel", "slack")
    alert = Alert.objects.get(kind="test")
    assert alert.status == AlertStatus.FAILED and alert.delivered_at is None
    assert alert.delivered_channels == [] and alert.deliveries.count() == 0
    assert alert.last_error.startswith("slack: not configured (set SLACK_BOT_TOKEN")


def test_it_exits_non_zero_when_any_configured_channel_fails(smtp_down, slack):
    with pytest.raises(CommandError, match="not delivered: email failed"):
        run()
    assert len(slack.requests) == 1
    alert = Alert.objects.get(kind="test")
    assert alert.status == AlertStatus.FAILED and alert.delivered_at is None
    assert alert.delivered_channels == ["slack", "log"]
    assert [(d.channel, d.status) for d in alert.deliveries.all()] == [
        ("email", DeliveryStatus.FAILED),
        ("slack", DeliveryStatus.OK),
        ("log", DeliveryStatus.OK),
    ]
    assert alert.last_error.startswith("email: ConnectionRefusedError")
