"""The health rules of enrichment.monitoring (beat, every minute): each fires once, does not
fire again while its condition holds, fires again for a new day, opening or outage, and a
critical condition that clears sends a recovery notice. The clock moves with time-machine."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings as django_settings

from alerting.models import Alert, AlertStatus
from alerting.tests import conftest as alerting_fixtures
from common.testing import run_in_threads
from costs import breaker, budget
from enrichment import monitoring
from enrichment.models import EnrichmentJob, JobStatus, WorkerHeartbeat
from enrichment.services import heartbeat_beat
from enrichment.tasks import health_check as health_check_task
from memories.models import Memory
from memoryconnector.celery import app as celery_app

pytestmark = pytest.mark.django_db

# The alerting tests' fixtures: no channel configured unless a test starts one (autouse), a real
# SMTP server on 127.0.0.1 with SMTP_* pointing at it, Celery tasks run eagerly.
_no_channels_configured = alerting_fixtures._no_channels_configured
smtp = alerting_fixtures.smtp
eager_celery = alerting_fixtures.eager_celery

START = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _only_this_tests_workers(monkeypatch):
    """Only the heartbeats a test writes count: the session's in-process Celery worker (pipeline
    tests) would otherwise beat into the same database and look alive."""
    monkeypatch.setattr("enrichment.services.heartbeat_beat", lambda **kwargs: None)
    WorkerHeartbeat.objects.all().delete()


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def alerts(kind_prefix: str) -> list[tuple[str, str, str]]:
    rows = Alert.objects.filter(kind__startswith=kind_prefix).order_by("id")
    return [(a.kind, a.severity, a.dedup_key) for a in rows]


def add_jobs(user, count: int, *, status: str = JobStatus.PENDING, **fields) -> None:
    memories = Memory.objects.bulk_create(
        Memory(user=user, text_content=f"memory {i}") for i in range(count)
    )
    EnrichmentJob.objects.bulk_create(
        EnrichmentJob(memory=memory, text_hash="x", status=status, **fields) for memory in memories
    )


def worker_alive() -> None:
    heartbeat_beat(hostname="celery@test", pid=1, started_at=START)


# --- budget breaker open for over ALERT_BUDGET_BREAKER_OPEN_MINUTES ------------------------------


def test_the_budget_breaker_open_over_an_hour_warns_once_per_opening(clock, settings):
    settings.ALERT_BUDGET_BREAKER_OPEN_MINUTES = 60
    check = monitoring.budget_breaker_open_long_check
    assert check() == "ok"
    budget.budget_pause()  # the breaker opens at 09:00
    clock.shift(dt.timedelta(minutes=59))
    assert check() == "ok"
    clock.shift(dt.timedelta(minutes=2))
    assert check() == "raised"
    for _ in range(3):
        clock.shift(dt.timedelta(minutes=1))
        assert check() == "holding"
    first = "budget-breaker-open:2026-11-28:2026-11-28T09:00:00+00:00"
    assert alerts("budget_breaker") == [("budget_breaker_open_long", "warning", first)]
    alert = Alert.objects.get(dedup_key=first)
    assert alert.title == "AI budget breaker open for over 60 min"
    assert alert.context["paused"] is True and alert.context["minutesOpen"] == 61
    assert "AI is paused by staff" in alert.message

    budget.budget_resume()  # closed at 10:04 ...
    assert check() == "ok"
    clock.shift(dt.timedelta(minutes=10))
    budget.budget_pause()  # ... and open again at 10:14: a new opening
    clock.shift(dt.timedelta(minutes=30))
    assert check() == "ok"
    clock.shift(dt.timedelta(minutes=31))
    assert check() == "raised"
    assert alerts("budget_breaker") == [
        ("budget_breaker_open_long", "warning", first),
        (
            "budget_breaker_open_long",
            "warning",
            "budget-breaker-open:2026-11-28:2026-11-28T10:14:00+00:00",
        ),
    ]


def test_a_spent_budget_counts_as_open(clock, settings):
    settings.AI_DAILY_BUDGET_CENTS = Decimal("0")
    settings.ALERT_BUDGET_BREAKER_OPEN_MINUTES = 60
    budget.budget_limit_set(limit_cents=Decimal("0"))  # spent (0) >= limit (0): open at 09:00
    clock.shift(dt.timedelta(minutes=61))
    assert monitoring.budget_breaker_open_long_check() == "raised"
    assert "the daily budget is spent" in Alert.objects.get().message


# --- provider breaker (the beat backstop for a lost signal) -------------------------------------


def open_provider_breaker() -> None:
    for _ in range(django_settings.AI_PROVIDER_FAILURE_THRESHOLD):
        breaker.provider_breaker_record_failure()


def test_the_provider_breaker_is_critical_once_per_opening_and_recovers(clock, settings):
    """The signals wait for a commit this test never makes: only the beat check sees it."""
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 2
    settings.AI_PROVIDER_COOLDOWN_SECONDS = 60
    check = monitoring.provider_breaker_sync
    assert check() == "ok"
    open_provider_breaker()
    assert check() == "raised"
    assert check() == "holding"
    clock.shift(61)
    assert breaker.provider_breaker_allow()  # half open: still the same opening
    assert check() == "holding"
    breaker.provider_breaker_record_failure()  # the probe failed: open again
    assert check() == "holding"
    clock.shift(120)
    assert breaker.provider_breaker_allow()
    breaker.provider_breaker_record_success()  # closed
    assert check() == "recovered"
    assert check() == "ok"
    clock.shift(60)
    open_provider_breaker()
    assert check() == "raised"
    assert alerts("provider_breaker") == [
        ("provider_breaker_open", "critical", "provider-breaker-open:1"),
        ("provider_breaker_open_recovered", "info", "provider-breaker-open:1:recovered"),
        ("provider_breaker_open", "critical", "provider-breaker-open:2"),
    ]
    recovery = Alert.objects.get(kind="provider_breaker_open_recovered")
    assert recovery.context["minutes"] == 3
    assert recovery.message.startswith("The AI provider breaker is closed again")


# --- queue thresholds, once per day -------------------------------------------------------------


def test_pending_jobs_over_the_threshold_warn_once_per_day(clock, settings, user):
    settings.ALERT_PENDING_THRESHOLD = 3
    worker_alive()
    add_jobs(user, 3)
    assert monitoring.health_check()["queue_pending_high"] == "ok"
    add_jobs(user, 1)
    assert monitoring.health_check()["queue_pending_high"] == "raised"
    add_jobs(user, 5)
    for _ in range(3):
        clock.shift(60)
        worker_alive()
        assert monitoring.health_check()["queue_pending_high"] == "holding"
    clock.move_to(START + dt.timedelta(days=1))
    worker_alive()
    assert monitoring.health_check()["queue_pending_high"] == "raised"
    assert alerts("queue") == [
        ("queue_pending_high", "warning", "queue-pending-high:2026-11-28"),
        ("queue_pending_high", "warning", "queue-pending-high:2026-11-29"),
    ]
    first = Alert.objects.filter(kind="queue_pending_high").earliest("id")
    assert first.title == "4 enrichment jobs pending"
    assert first.context["pending"] == 4 and first.context["threshold"] == 3


def test_it_counts_deferred_jobs_as_pending_and_names_their_reasons(clock, settings, user):
    settings.ALERT_PENDING_THRESHOLD = 3
    worker_alive()
    until = START + dt.timedelta(hours=15)
    add_jobs(user, 2)
    add_jobs(
        user, 2, status=JobStatus.DEFERRED, deferred_reason="budget_exhausted", not_before=until
    )
    assert monitoring.health_check()["queue_pending_high"] == "raised"
    alert = Alert.objects.get(kind="queue_pending_high")
    assert alert.title == "4 enrichment jobs pending"
    assert (
        "2 of them deferred (budget_exhausted 2 until 2026-11-29T00:00:00+00:00)" in alert.message
    )
    assert alert.context["deferredByReason"] == {
        "budget_exhausted": {"count": 2, "until": "2026-11-29T00:00:00Z"}
    }


def test_failed_jobs_over_the_threshold_warn_once_per_day(clock, settings, user):
    settings.ALERT_FAILED_TODAY_THRESHOLD = 2
    add_jobs(user, 2, status=JobStatus.FAILED, finished_at=START)
    assert monitoring.health_check()["queue_failed_high"] == "ok"
    add_jobs(user, 1, status=JobStatus.FAILED, finished_at=START)
    assert monitoring.health_check()["queue_failed_high"] == "raised"
    add_jobs(user, 4, status=JobStatus.FAILED, finished_at=START)
    assert monitoring.health_check()["queue_failed_high"] == "holding"
    clock.move_to(START + dt.timedelta(days=1))
    # Yesterday's failures do not count today.
    assert monitoring.health_check()["queue_failed_high"] == "ok"
    add_jobs(user, 3, status=JobStatus.FAILED, finished_at=START + dt.timedelta(days=1))
    assert monitoring.health_check()["queue_failed_high"] == "raised"
    assert alerts("queue") == [
        ("queue_failed_high", "warning", "queue-failed-high:2026-11-28"),
        ("queue_failed_high", "warning", "queue-failed-high:2026-11-29"),
    ]


def test_a_threshold_of_0_turns_a_rule_off(clock, settings, user):
    settings.ALERT_PENDING_THRESHOLD = 0
    settings.ALERT_FAILED_TODAY_THRESHOLD = 0
    settings.ALERT_BUDGET_BREAKER_OPEN_MINUTES = 0
    worker_alive()
    add_jobs(user, 5)
    add_jobs(user, 5, status=JobStatus.FAILED, finished_at=START)
    budget.budget_pause()
    clock.shift(dt.timedelta(hours=3))
    worker_alive()
    results = monitoring.health_check()
    assert results["queue_pending_high"] == "off"
    assert results["queue_failed_high"] == "off"
    assert results["budget_breaker_open_long"] == "off"
    assert Alert.objects.count() == 0


# --- no worker heartbeat while jobs are pending -------------------------------------------------


def test_no_heartbeat_while_jobs_are_pending_is_critical_once_per_outage(clock, user):
    sync = monitoring.worker_heartbeat_sync
    assert sync() == "ok"  # no worker, but nothing waits either
    add_jobs(user, 2)
    worker_alive()
    assert sync() == "ok"
    clock.shift(3 * django_settings.ENRICHMENT_HEARTBEAT_SECONDS + 1)  # the worker went silent
    assert sync() == "raised"
    for _ in range(5):
        clock.shift(60)
        assert sync() == "holding"
    worker_alive()  # it is back
    assert sync() == "recovered"
    assert sync() == "ok"
    clock.shift(60)  # silent again: a new outage
    assert sync() == "raised"
    assert alerts("worker_heartbeat") == [
        ("worker_heartbeat_missing", "critical", "worker-heartbeat-missing:1"),
        ("worker_heartbeat_missing_recovered", "info", "worker-heartbeat-missing:1:recovered"),
        ("worker_heartbeat_missing", "critical", "worker-heartbeat-missing:2"),
    ]
    first = Alert.objects.get(dedup_key="worker-heartbeat-missing:1")
    assert first.title == "No enrichment worker is running"
    assert first.context["pending"] == 2 and first.context["incident"] == 1
    assert first.context["lastHeartbeat"] == "2026-11-28T09:00:00Z"
    recovery = Alert.objects.get(dedup_key="worker-heartbeat-missing:1:recovered")
    assert recovery.title == "Recovered: No enrichment worker is running"
    assert recovery.context["minutes"] == 5


def test_the_outage_clears_when_no_job_is_pending_any_more(clock, user):
    add_jobs(user, 1)
    assert monitoring.worker_heartbeat_sync() == "raised"
    EnrichmentJob.objects.update(status=JobStatus.CANCELLED)
    assert monitoring.worker_heartbeat_sync() == "recovered"


# --- the whole check ----------------------------------------------------------------------------


def test_one_broken_rule_does_not_stop_the_others(clock, settings, user, monkeypatch, caplog):
    def broken():
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(monitoring, "budget_snapshot", broken)
    settings.ALERT_PENDING_THRESHOLD = 1
    add_jobs(user, 2)
    results = monitoring.health_check()
    assert results == {
        "budget_breaker_open_long": "error",
        "provider_breaker_open": "ok",
        "queue_pending_high": "raised",
        "queue_failed_high": "ok",
        "worker_heartbeat_missing": "raised",
    }
    assert "health rule budget_breaker_open_long failed" in caplog.text


def test_the_beat_task_emails_the_outage_and_its_recovery(
    clock, user, smtp, eager_celery, django_capture_on_commit_callbacks
):
    add_jobs(user, 1)
    with django_capture_on_commit_callbacks(execute=True):
        health_check_task.delay()
        health_check_task.delay()
    worker_alive()
    with django_capture_on_commit_callbacks(execute=True):
        health_check_task.delay()
    subjects = [message["Subject"] for _, _, message in smtp.messages]
    assert subjects == [
        "[Memory Connector] CRITICAL: No enrichment worker is running",
        "[Memory Connector] INFO: Recovered: No enrichment worker is running",
    ]
    assert set(Alert.objects.values_list("status", flat=True)) == {AlertStatus.DELIVERED}


def test_beat_runs_the_checks_and_the_alert_retries_every_minute_on_maintenance():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    for name, task in (
        ("enrichment-health-check", "enrichment.health_check"),
        ("alerts-retry-undelivered", "alerting.alerts_retry_undelivered"),
    ):
        entry = schedule[name]
        assert entry["task"] == task
        assert entry["schedule"] == 60.0
        assert entry["options"]["expires"] == 60.0
        assert task in celery_app.tasks
        assert celery_app.amqp.router.route({}, task)["queue"].name == "maintenance"


# --- beat's watchdog, for when no worker is alive -----------------------------------------------


def test_with_no_worker_alive_beat_raises_and_emails_the_outage_itself(clock, user, smtp):
    """No Celery here: with every worker gone, a queued delivery would wait for ever."""
    add_jobs(user, 3)
    results = monitoring.health_check_without_workers()
    assert results["worker_heartbeat_missing"] == "raised"
    assert [m["Subject"] for _, _, m in smtp.messages] == [
        "[Memory Connector] CRITICAL: No enrichment worker is running"
    ]
    alert = Alert.objects.get(kind="worker_heartbeat_missing")
    assert alert.status == AlertStatus.DELIVERED
    clock.shift(60)
    assert monitoring.health_check_without_workers()["worker_heartbeat_missing"] == "holding"
    assert len(smtp.messages) == 1


def test_with_a_worker_alive_beat_leaves_the_checks_to_it(clock, user, smtp):
    add_jobs(user, 3)
    worker_alive()
    assert monitoring.health_check_without_workers() is None
    assert Alert.objects.count() == 0 and smtp.messages == []


def test_the_watchdog_loop_survives_a_failing_check(monkeypatch, caplog):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        if len(calls) == 3:
            stop.set()

    monkeypatch.setattr(monitoring, "health_check_without_workers", check)
    stop = threading.Event()
    thread = threading.Thread(target=monitoring.watchdog_loop, args=(stop,), kwargs={"interval": 0})
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(calls) == 3
    assert "beat watchdog: health check failed" in caplog.text


def test_beat_starts_its_watchdog_when_it_starts(monkeypatch):
    from celery.signals import beat_init

    started = threading.Event()
    monkeypatch.setattr(monitoring, "watchdog_loop", lambda stop, **kwargs: started.set())
    responses = beat_init.send(sender=None)
    threads = [thread for _, thread in responses if isinstance(thread, threading.Thread)]
    assert len(threads) == 1 and threads[0].daemon and threads[0].name == "beat-watchdog"
    assert started.wait(5)


# --- many checkers at once (PostgreSQL) ---------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_8_checkers_at_once_raise_one_outage_and_one_recovery(user, smtp, eager_celery):
    add_jobs(user, 1)
    with time_machine.travel(START, tick=True):
        raised = run_in_threads(8, lambda _: monitoring.worker_heartbeat_sync())
        worker_alive()
        recovered = run_in_threads(8, lambda _: monitoring.worker_heartbeat_sync())
    assert raised.count("raised") == 1 and set(raised) == {"raised", "holding"}
    assert recovered.count("recovered") == 1 and set(recovered) == {"recovered", "ok"}
    assert alerts("worker_heartbeat") == [
        ("worker_heartbeat_missing", "critical", "worker-heartbeat-missing:1"),
        ("worker_heartbeat_missing_recovered", "info", "worker-heartbeat-missing:1:recovered"),
    ]
    assert len(smtp.messages) == 2
