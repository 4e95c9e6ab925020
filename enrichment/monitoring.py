"""The health rules that Celery beat checks every minute (task enrichment.health_check): the
budget breaker open too long, the provider breaker, the queue, the workers' heartbeats. Each rule
reads through selectors and raises its alert through alerting.alert_send with a dedup key that
makes it fire once per day, per opening or per outage; a critical condition that clears sends a
recovery notice (costs.alerts.incident_sync). Thresholds: the ALERT_* settings (0 = rule off).

The rules run on a worker (the beat task) and, when no worker is alive to run them or to deliver
alerts, in the beat process itself (health_check_without_workers)."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from django.conf import settings
from django.db import connection
from django.utils import timezone

from alerting.models import Severity
from alerting.selectors import alerts_due_ids
from alerting.services import alert_deliver, alert_send
from common.clock import today
from costs.alerts import Condition, incident_sync, provider_breaker_sync
from costs.selectors import budget_snapshot

from .selectors import (
    queue_counts,
    worker_alive_window_seconds,
    worker_last_heartbeat,
    workers_live,
)

logger = logging.getLogger(__name__)

# How often beat runs the health check (CELERY_BEAT_SCHEDULE) and its own watchdog.
HEALTH_CHECK_SECONDS = 60.0

BUDGET_BREAKER_OPEN_LONG = "budget_breaker_open_long"
QUEUE_PENDING_HIGH = "queue_pending_high"
QUEUE_FAILED_HIGH = "queue_failed_high"
WORKER_HEARTBEAT_MISSING = "worker_heartbeat_missing"


def _sent(alert) -> str:
    return "raised" if alert is not None else "holding"


def budget_breaker_open_long_check(*, now: dt.datetime | None = None) -> str:
    """Warning once per opening of today's budget breaker (its opened_at is in the key) when it
    has been open for more than ALERT_BUDGET_BREAKER_OPEN_MINUTES."""
    minutes = settings.ALERT_BUDGET_BREAKER_OPEN_MINUTES
    if not minutes:
        return "off"
    now = now or timezone.now()
    budget = budget_snapshot()
    if budget.state != "open" or budget.opened_at is None:
        return "ok"
    open_for = now - budget.opened_at
    if open_for <= dt.timedelta(minutes=minutes):
        return "ok"
    opened_at = budget.opened_at.astimezone(dt.UTC)
    reason = "AI is paused by staff" if budget.paused else "the daily budget is spent"
    return _sent(
        alert_send(
            kind=BUDGET_BREAKER_OPEN_LONG,
            severity=Severity.WARNING,
            dedup_key=f"budget-breaker-open:{budget.day.isoformat()}:{opened_at.isoformat()}",
            title=f"AI budget breaker open for over {minutes} min",
            message=(
                f"The budget breaker has been open since {opened_at.isoformat()} "
                f"({int(open_for.total_seconds() // 60)} min): {reason}. New enrichments wait "
                "until the daily reset, until staff resume AI or raise today's limit."
            ),
            context={
                "day": budget.day,
                "openedAt": opened_at,
                "minutesOpen": int(open_for.total_seconds() // 60),
                "paused": budget.paused,
                "spentCents": budget.spent_cents,
                "limitCents": budget.limit_cents,
                "percentUsed": budget.percent_used,
            },
        )
    )


def _queue_threshold_check(
    *, kind: str, count: int, threshold: int, title: str, message: str, counts: dict
) -> str:
    """Warning once per budget day when `count` is over `threshold` (0 turns the rule off)."""
    if not threshold:
        return "off"
    if count <= threshold:
        return "ok"
    day = today()
    return _sent(
        alert_send(
            kind=kind,
            severity=Severity.WARNING,
            dedup_key=f"{kind.replace('_', '-')}:{day.isoformat()}",
            title=title,
            message=message,
            context={**counts, "threshold": threshold, "day": day},
        )
    )


def _deferred_text(counts: dict) -> str:
    """ "; 3 of them deferred (budget 2 until 2026-11-29T00:00:00+00:00, ...)" or ""."""
    if not counts["deferred"]:
        return ""
    reasons = ", ".join(
        f"{reason} {row['count']}" + (f" until {row['until'].isoformat()}" if row["until"] else "")
        for reason, row in counts["deferredByReason"].items()
    )
    return f"; {counts['deferred']} of them deferred ({reasons})"


def queue_pending_check(*, counts: dict) -> str:
    """More than ALERT_PENDING_THRESHOLD jobs pending (deferred ones included, as the
    reference counts them: a backlog behind an open breaker is a backlog)."""
    threshold = settings.ALERT_PENDING_THRESHOLD
    return _queue_threshold_check(
        kind=QUEUE_PENDING_HIGH,
        count=counts["pending"],
        threshold=threshold,
        title=f"{counts['pending']} enrichment jobs pending",
        message=(
            f"{counts['pending']} jobs are waiting (threshold {threshold})"
            f"{_deferred_text(counts)}; {counts['processing']} are running. Workers may be "
            "too few or stuck, or AI is stopped by a breaker or a limit."
        ),
        counts=counts,
    )


def queue_failed_check(*, counts: dict) -> str:
    """More than ALERT_FAILED_TODAY_THRESHOLD jobs failed today."""
    threshold = settings.ALERT_FAILED_TODAY_THRESHOLD
    return _queue_threshold_check(
        kind=QUEUE_FAILED_HIGH,
        count=counts["failedToday"],
        threshold=threshold,
        title=f"{counts['failedToday']} enrichment jobs failed today",
        message=(
            f"{counts['failedToday']} jobs failed today (threshold {threshold}); their last "
            "errors are on the jobs in the admin, and staff can retry them."
        ),
        counts=counts,
    )


def _heartbeat_condition() -> Condition | None:
    pending = queue_counts()["pending"]
    if not pending or workers_live():
        return None
    window = worker_alive_window_seconds()
    last_seen = worker_last_heartbeat()
    return Condition(
        title="No enrichment worker is running",
        message=(
            f"{pending} {'job is' if pending == 1 else 'jobs are'} pending and no worker has "
            f"sent a heartbeat in the last {window} s "
            f"(last seen: {last_seen.isoformat() if last_seen else 'never'}). "
            "Nothing is enriched until a worker runs: celery -A memoryconnector worker."
        ),
        context={"pending": pending, "lastHeartbeat": last_seen, "windowSeconds": window},
    )


def worker_heartbeat_sync() -> str:
    """Critical once per outage (jobs pending, no live worker), a recovery when it clears."""
    return incident_sync(
        kind=WORKER_HEARTBEAT_MISSING,
        key_prefix="worker-heartbeat-missing",
        check=_heartbeat_condition,
        cleared="Workers are sending heartbeats again (or no job is pending).",
    )


def health_check(*, now: dt.datetime | None = None) -> dict[str, str]:
    """Run every rule once; returns each rule's outcome ("ok", "off", "raised", "holding",
    "recovered" or "error"). A rule that fails is logged and does not stop the others."""
    counts: dict | None = None

    def queue() -> dict:
        nonlocal counts
        if counts is None:
            counts = queue_counts()
        return counts

    rules = {
        BUDGET_BREAKER_OPEN_LONG: lambda: budget_breaker_open_long_check(now=now),
        "provider_breaker_open": provider_breaker_sync,
        QUEUE_PENDING_HIGH: lambda: queue_pending_check(counts=queue()),
        QUEUE_FAILED_HIGH: lambda: queue_failed_check(counts=queue()),
        WORKER_HEARTBEAT_MISSING: worker_heartbeat_sync,
    }
    results: dict[str, str] = {}
    for name, rule in rules.items():
        try:
            results[name] = rule()
        except Exception:  # noqa: BLE001 - one broken rule must not silence the others
            logger.exception("health rule %s failed", name)
            results[name] = "error"
    changed = {k: v for k, v in results.items() if v in ("raised", "recovered", "error")}
    if changed:
        logger.info("health check: %s", changed, extra={"rules": results})
    return results


# --- beat's watchdog: when no worker is alive --------------------------------------------------


def health_check_without_workers() -> dict[str, str] | None:
    """The beat process's own check, every minute. With a live worker it does nothing: workers
    run the health_check task and deliver alerts. With none, nobody would: the task and every
    delivery wait in the broker, so "no worker" could never reach anyone. Then beat runs the
    rules itself and delivers the due alerts in-process (each delivery is claimed by
    compare-and-set, so a worker that comes back never sends one again)."""
    if workers_live():
        return None
    results = health_check()
    for alert_id in alerts_due_ids(limit=settings.ALERT_SWEEP_BATCH_SIZE):
        alert_deliver(alert_id=alert_id)
    return results


def watchdog_loop(stop: threading.Event, *, interval: float = HEALTH_CHECK_SECONDS) -> None:
    """Run health_check_without_workers every `interval` seconds until `stop` is set (a daemon
    thread of the beat process, started on beat_init by enrichment.tasks)."""
    while not stop.wait(interval):
        try:
            health_check_without_workers()
        except Exception:  # noqa: BLE001 - the watchdog must outlive a database hiccup
            logger.exception("beat watchdog: health check failed")
        finally:
            connection.close()
