"""Staff: the alert list with its filters, the deliveries on the detail page, "Resend"."""

from __future__ import annotations

import pytest
from django.test import Client

from alerting.models import Alert, AlertStatus
from alerting.services import alert_deliver, alert_send

pytestmark = pytest.mark.django_db

URL = "/admin/alerting/alert/"


@pytest.fixture
def admin_client_(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


def make_alert(key: str, severity: str = "warning") -> Alert:
    return alert_send(
        kind="queue_failed",
        severity=severity,
        dedup_key=key,
        title=f"Title {key}",
        message="More than 10 jobs failed today.",
        context={"failedToday": 11},
    )


def test_it_lists_alerts_with_filters_and_search(admin_client_):
    make_alert("failed:2026-11-27")
    make_alert("failed:2026-11-28", severity="critical")

    response = admin_client_.get(URL)
    assert response.status_code == 200
    assert b"Title failed:2026-11-27" in response.content

    filtered = admin_client_.get(URL, {"severity__exact": "critical", "status__exact": "pending"})
    assert filtered.status_code == 200
    assert b"Title failed:2026-11-28" in filtered.content
    assert b"Title failed:2026-11-27" not in filtered.content

    found = admin_client_.get(URL, {"q": "11-27"})
    assert b"Title failed:2026-11-27" in found.content
    assert b"Title failed:2026-11-28" not in found.content


def test_it_shows_each_delivery_attempt_read_only(admin_client_):
    alert = make_alert("k1")
    alert_deliver(alert_id=alert.pk)

    response = admin_client_.get(f"{URL}{alert.pk}/change/")

    assert response.status_code == 200
    assert b"failedToday" in response.content
    assert b"Alert deliveries" in response.content
    assert b'name="deliveries-0-channel"' not in response.content  # nothing editable
    assert admin_client_.get(f"{URL}add/").status_code == 403


def test_the_resend_action_sends_the_alert_again(
    admin_client_, smtp, eager_celery, django_capture_on_commit_callbacks
):
    alert = make_alert("k1")
    alert_deliver(alert_id=alert.pk)
    assert len(smtp.messages) == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(URL, {"action": "resend", "_selected_action": [alert.pk]})

    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DELIVERED and alert.attempts == 1
    assert len(smtp.messages) == 2
