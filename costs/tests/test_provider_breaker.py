"""The provider breaker: closed -> open after N consecutive failures -> half_open after the
cool-down with exactly one probe -> closed on its success (or open again on its failure)."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from costs import breaker, selectors
from costs.models import ProviderBreaker

START = dt.datetime(2031, 1, 1, 12, 0, tzinfo=dt.UTC)


def state() -> str:
    return selectors.provider_breaker_snapshot()["state"]


@pytest.fixture
def breaker_settings(settings):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 5
    settings.AI_PROVIDER_COOLDOWN_SECONDS = 60
    settings.AI_PROVIDER_PROBE_TIMEOUT_SECONDS = 120


@pytest.mark.django_db
def test_it_opens_after_the_threshold_of_consecutive_failures(breaker_settings):
    for _ in range(4):
        breaker.provider_breaker_record_failure()
    breaker.provider_breaker_record_success()  # a success breaks the run
    for _ in range(4):
        breaker.provider_breaker_record_failure()
    assert state() == "closed" and breaker.provider_breaker_allow()
    breaker.provider_breaker_record_failure()
    assert state() == "open"
    assert selectors.provider_breaker_snapshot()["consecutiveFailures"] == 5
    assert breaker.provider_breaker_allow() is False


@pytest.mark.django_db(transaction=True)
def test_it_goes_open_half_open_closed_through_one_probe(breaker_settings, signal_log):
    with time_machine.travel(START, tick=False):
        for _ in range(5):
            breaker.provider_breaker_record_failure()
    with time_machine.travel(START + dt.timedelta(seconds=59), tick=False):
        assert breaker.provider_breaker_allow() is False  # cooling down
    with time_machine.travel(START + dt.timedelta(seconds=60), tick=False):
        assert breaker.provider_breaker_allow() is True  # the probe
        assert state() == "half_open"
        assert [breaker.provider_breaker_allow() for _ in range(5)] == [False] * 5
        breaker.provider_breaker_record_success()
        assert state() == "closed"
        assert selectors.provider_breaker_snapshot()["consecutiveFailures"] == 0
        assert breaker.provider_breaker_allow() is True
    assert [(c["previous"], c["state"]) for c in signal_log.of("provider_breaker_changed")] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


@pytest.mark.django_db
def test_a_failed_probe_opens_it_for_another_cool_down(breaker_settings):
    with time_machine.travel(START, tick=False):
        for _ in range(5):
            breaker.provider_breaker_record_failure()
    with time_machine.travel(START + dt.timedelta(seconds=61), tick=False):
        assert breaker.provider_breaker_allow() is True
        breaker.provider_breaker_record_failure()
        assert state() == "open"
        assert breaker.provider_breaker_allow() is False
    with time_machine.travel(START + dt.timedelta(seconds=61 + 59), tick=False):
        assert breaker.provider_breaker_allow() is False
    with time_machine.travel(START + dt.timedelta(seconds=61 + 60), tick=False):
        assert breaker.provider_breaker_allow() is True


@pytest.mark.django_db
def test_a_probe_that_never_reports_is_replaced_after_the_probe_timeout(breaker_settings):
    with time_machine.travel(START, tick=False):
        for _ in range(5):
            breaker.provider_breaker_record_failure()
    with time_machine.travel(START + dt.timedelta(seconds=60), tick=False):
        assert breaker.provider_breaker_allow() is True  # then its worker dies
    with time_machine.travel(START + dt.timedelta(seconds=60 + 119), tick=False):
        assert breaker.provider_breaker_allow() is False
    with time_machine.travel(START + dt.timedelta(seconds=60 + 120), tick=False):
        assert breaker.provider_breaker_allow() is True
        assert breaker.provider_breaker_allow() is False


@pytest.mark.django_db
def test_a_probe_that_made_no_call_hands_the_probe_on(breaker_settings):
    with time_machine.travel(START, tick=False):
        for _ in range(5):
            breaker.provider_breaker_record_failure()
    with time_machine.travel(START + dt.timedelta(seconds=60), tick=False):
        assert breaker.provider_breaker_allow() is True
        breaker.provider_breaker_release_probe()
        assert state() == "half_open"
        assert breaker.provider_breaker_allow() is True
        assert breaker.provider_breaker_allow() is False


@pytest.mark.django_db
def test_staff_can_close_it(breaker_settings):
    for _ in range(5):
        breaker.provider_breaker_record_failure()
    breaker.provider_breaker_reset()
    assert state() == "closed" and breaker.provider_breaker_allow()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_exactly_one_probe_among_concurrent_callers(breaker_settings):
    assert connection.vendor == "postgresql"
    for _ in range(5):
        breaker.provider_breaker_record_failure()
    # The cool-down is over.
    ProviderBreaker.objects.update(since=timezone.now() - dt.timedelta(seconds=61))
    workers = 24
    barrier = threading.Barrier(workers)

    def attempt(_):
        try:
            barrier.wait()
            return breaker.provider_breaker_allow()
        finally:
            connection.close()

    for _round in range(3):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            allowed = list(pool.map(attempt, range(workers)))
        assert allowed.count(True) == 1
        assert state() == "half_open"
        # The probe fails: open again, and the next round's cool-down is over at once.
        breaker.provider_breaker_record_failure()
        assert state() == "open"
        ProviderBreaker.objects.update(since=timezone.now() - dt.timedelta(seconds=61))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        allowed = list(pool.map(attempt, range(workers)))
    assert allowed.count(True) == 1
    breaker.provider_breaker_record_success()
    assert state() == "closed"
    with ThreadPoolExecutor(max_workers=workers) as pool:
        assert all(pool.map(attempt, range(workers)))
