"""Alert writes: raise an alert once per dedup key, deliver it on every configured channel under a
compare-and-set claim, retry failed channels with backoff, resend on staff request."""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.metrics import ALERT_DELIVERIES_FAILED, ALERTS_SENT

from .channels import CHANNEL_NAMES, CHANNELS, Channel, ChannelError, get_channel, scrub_secrets
from .models import Alert, AlertDelivery, AlertStatus, DeliveryStatus, Severity

logger = logging.getLogger("alerting.services")

# Longer than deliver_alert's hard time limit, so a live worker never loses its claim; the claim
# of a worker that died mid-delivery expires and the retry sweep delivers the alert again.
CLAIM_LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class ChannelOutcome:
    """What happened on one channel: ok True/False, or None when it is not configured."""

    channel: str
    ok: bool | None
    error: str = ""
    retry_after: float | None = None

    def __str__(self) -> str:
        if self.ok is None:
            return f"not configured ({self.error})" if self.error else "not configured"
        return "ok" if self.ok else f"failed: {self.error}"


def _json_safe(context: dict | None) -> dict:
    """Decimals, dates and UUIDs become strings, so any caller's numbers can be stored."""
    return json.loads(json.dumps(context or {}, cls=DjangoJSONEncoder))


def alert_send(
    *,
    kind: str,
    severity: str,
    dedup_key: str,
    title: str,
    message: str,
    context: dict | None = None,
) -> Alert | None:
    """Raise an alert once: returns the new Alert, or None when `dedup_key` was already used
    (also when many workers send it at the same moment: the unique constraint decides).

    Delivery runs in a Celery task enqueued when the caller's transaction commits. If the broker
    is unreachable the alert stays pending and the retry sweep delivers it; nothing is raised.
    """
    if severity not in Severity.values:
        raise ValueError(f"severity must be one of {Severity.values}, not {severity!r}")
    if not dedup_key or len(dedup_key) > Alert._meta.get_field("dedup_key").max_length:
        raise ValueError("dedup_key must be 1 to 255 characters")
    now = timezone.now()
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind[:64],
                severity=severity,
                dedup_key=dedup_key,
                title=title[:255],
                message=message,
                context=_json_safe(context),
                next_attempt_at=now,
                created_at=now,
            )
    except IntegrityError:
        if Alert.objects.filter(dedup_key=dedup_key).exists():
            logger.debug("alert %s already raised; not sent again", dedup_key)
            return None
        raise
    transaction.on_commit(partial(_enqueue_delivery, alert.pk))
    return alert


def _enqueue_delivery(alert_id: int) -> None:
    from .tasks import deliver_alert  # tasks import this module

    try:
        deliver_alert.delay(alert_id)
    except Exception as exc:  # noqa: BLE001 - a broker outage must not fail the caller
        logger.warning(
            "alert %s: could not enqueue its delivery (%s); the retry sweep will send it",
            alert_id,
            type(exc).__name__,
            extra={"alert_id": alert_id},
        )


def retry_delay(attempts: int, *, retry_after: float | None = None) -> timedelta:
    """Exponential backoff from ALERT_RETRY_BASE_SECONDS, capped at ALERT_RETRY_MAX_SECONDS,
    with "equal jitter" (half fixed, half random) so alerts that failed together do not retry
    together; never earlier than the far end's Retry-After."""
    base = float(settings.ALERT_RETRY_BASE_SECONDS)
    delay = min(float(settings.ALERT_RETRY_MAX_SECONDS), base * 2 ** min(max(attempts - 1, 0), 30))
    delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not cryptography
    return timedelta(seconds=max(delay, retry_after or 0))


def _attempt(alert: Alert, channel: Channel, *, attempt: int) -> ChannelOutcome:
    """Send on one channel and record the attempt (error text scrubbed of secrets)."""
    try:
        channel.send(alert)
    except ChannelError as exc:
        outcome = ChannelOutcome(channel.name, False, exc.message, exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - a bug in one channel must not stop the others
        outcome = ChannelOutcome(channel.name, False, scrub_secrets(f"{type(exc).__name__}: {exc}"))
    else:
        outcome = ChannelOutcome(channel.name, True)
    AlertDelivery.objects.create(
        alert=alert,
        channel=channel.name,
        status=DeliveryStatus.OK if outcome.ok else DeliveryStatus.FAILED,
        error=outcome.error,
        attempt=attempt,
    )
    if outcome.ok:
        ALERTS_SENT.labels(channel.name, alert.severity).inc()
    else:
        ALERT_DELIVERIES_FAILED.labels(channel.name).inc()
        logger.warning(
            "alert %s: %s failed: %s",
            alert.dedup_key,
            channel.name,
            outcome.error,
            extra={"alert_id": alert.pk, "channel": channel.name, "dedup_key": alert.dedup_key},
        )
    return outcome


def _settled_status(accepted: list[str]) -> AlertStatus:
    """The status of an alert no channel failed: delivered when a delivery channel (email,
    Slack) accepted it, log_only when only the log has it."""
    delivering = {channel.name for channel in CHANNELS if channel.delivers}
    return AlertStatus.DELIVERED if delivering & set(accepted) else AlertStatus.LOG_ONLY


def _claim(alert_id: int) -> str | None:
    """Compare-and-set: take the alert for one delivery run if it is pending, due and not held
    by a live claim. Returns the claim token, or None when there is nothing to do."""
    now = timezone.now()
    token = uuid.uuid4().hex
    claimed = (
        Alert.objects.filter(pk=alert_id, status=AlertStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claim_token=token, claimed_until=now + CLAIM_LEASE, attempts=F("attempts") + 1)
    )
    return token if claimed == 1 else None


def alert_deliver(*, alert_id: int) -> str:
    """Deliver a pending alert on every configured channel that has not had it yet.

    Safe to run twice at once: only the run that claims the alert sends. Returns "delivered"
    (a delivery channel accepted it), "log_only" (no delivery channel configured: the log has
    it), "retry" (some channel failed; next_attempt_at is set), "failed" (ALERT_MAX_ATTEMPTS
    used up; the alert stays visible for staff to resend) or "skipped" (not due, or claimed
    elsewhere).
    """
    token = _claim(alert_id)
    if token is None:
        logger.debug("alert %s: nothing to deliver (not due, done or claimed)", alert_id)
        return "skipped"
    alert = Alert.objects.get(pk=alert_id)
    mine = Alert.objects.filter(pk=alert_id, claim_token=token)
    done = list(alert.delivered_channels or [])
    failures: list[ChannelOutcome] = []
    for channel in CHANNELS:
        if channel.name in done or not channel.handles(alert):
            continue
        outcome = _attempt(alert, channel, attempt=alert.attempts)
        if outcome.ok:
            done.append(channel.name)
            # Recorded at once, so that a crash before the end does not re-send this channel.
            mine.update(delivered_channels=done)
        else:
            failures.append(outcome)

    release = {"claim_token": "", "claimed_until": None}
    finished = timezone.now()
    if not failures:
        status = _settled_status(done)
        mine.update(
            status=status,
            delivered_at=finished if status == AlertStatus.DELIVERED else None,
            next_attempt_at=None,
            last_error="",
            **release,
        )
        return str(status)

    summary = "; ".join(f"{o.channel}: {o.error}" for o in failures)
    fields = {"channels": [o.channel for o in failures], "dedup_key": alert.dedup_key}
    if alert.attempts >= settings.ALERT_MAX_ATTEMPTS:
        mine.update(status=AlertStatus.FAILED, next_attempt_at=None, last_error=summary, **release)
        logger.error(
            "alert %s undelivered after %s attempts, giving up (staff can resend it): %s",
            alert.dedup_key,
            alert.attempts,
            summary,
            extra=fields,
        )
        return "failed"
    wait = max((o.retry_after or 0 for o in failures), default=0)
    retry_at = finished + retry_delay(alert.attempts, retry_after=wait)
    mine.update(next_attempt_at=retry_at, last_error=summary, **release)
    logger.warning(
        "alert %s: attempt %s failed on %s; next attempt at %s",
        alert.dedup_key,
        alert.attempts,
        ", ".join(fields["channels"]),
        retry_at.isoformat(),
        extra=fields,
    )
    return "retry"


def alert_resend(*, alert: Alert) -> None:
    """Staff's "Resend": start delivery over on every configured channel, attempts from zero."""
    Alert.objects.filter(pk=alert.pk).update(
        status=AlertStatus.PENDING,
        attempts=0,
        delivered_channels=[],
        next_attempt_at=timezone.now(),
        last_error="",
        delivered_at=None,
        claim_token="",
        claimed_until=None,
    )
    transaction.on_commit(partial(_enqueue_delivery, alert.pk))


def alert_send_test(*, channel: str | None = None) -> tuple[Alert, list[ChannelOutcome]]:
    """Send a real test alert now, in this process, on `channel` or on every channel; record
    it like any alert. Unconfigured channels are reported, not attempted. The alert is failed
    when a channel failed or the one requested is not configured, delivered when a delivery
    channel accepted it, log_only when only the log has it."""
    names = [channel] if channel else list(CHANNEL_NAMES)
    now = timezone.now()
    alert = Alert.objects.create(
        kind="test",
        severity=Severity.INFO,
        dedup_key=f"test:{now.isoformat()}:{uuid.uuid4().hex[:8]}",
        title="Test alert from Memory Connector",
        message="If you can read this, alerts reach you on this channel.",
        context={"channels": ", ".join(names), "sentAt": now.isoformat(timespec="seconds")},
        attempts=1,
        created_at=now,
    )
    outcomes: list[ChannelOutcome] = []
    for name in names:
        target = get_channel(name)
        if not target.handles(alert):
            missing = target.missing()
            reason = f"set {missing}" if missing else "not routed for this alert kind"
            outcomes.append(ChannelOutcome(name, None, reason))
            continue
        outcomes.append(_attempt(alert, target, attempt=1))
    # Asking for one channel that cannot be used fails the test as a channel failure does.
    failed = [o for o in outcomes if o.ok is False or (channel and o.ok is None)]
    accepted = [o.channel for o in outcomes if o.ok]
    status = AlertStatus.FAILED if failed else _settled_status(accepted)
    Alert.objects.filter(pk=alert.pk).update(
        status=status,
        delivered_channels=accepted,
        delivered_at=timezone.now() if status == AlertStatus.DELIVERED else None,
        last_error="; ".join(f"{o.channel}: {o.error if o.ok is False else o}" for o in failed),
    )
    alert.refresh_from_db()
    return alert, outcomes
