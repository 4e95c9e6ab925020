"""Celery wrappers for alert delivery: one task per alert, and the periodic retry sweep."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .selectors import alerts_due_ids
from .services import alert_deliver


@shared_task(
    name="alerting.deliver_alert",
    acks_late=True,
    reject_on_worker_lost=True,
    # Each channel has its own network timeout (SMTP_TIMEOUT, SLACK_TIMEOUT); these bound the
    # whole run and stay below the claim lease (services.CLAIM_LEASE).
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def deliver_alert(alert_id: int) -> str:
    # No Celery autoretry: a failed channel is rescheduled by alert_deliver (next_attempt_at,
    # with backoff and Retry-After) and picked up by alerts_retry_undelivered.
    return alert_deliver(alert_id=alert_id)


@shared_task(
    name="alerting.alerts_retry_undelivered",
    acks_late=True,
    soft_time_limit=30,
    time_limit=60,
    ignore_result=True,
)
def alerts_retry_undelivered() -> int:
    """Beat, every minute: enqueue every pending alert whose next attempt is due (alerts whose
    first enqueue failed, failed channels after their backoff, claims of dead workers)."""
    due = alerts_due_ids(limit=settings.ALERT_SWEEP_BATCH_SIZE)
    for alert_id in due:
        deliver_alert.delay(alert_id)
    return len(due)
