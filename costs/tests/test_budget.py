"""The daily budget: reserve, settle, release, expiry, the budget breaker, staff overrides,
alert thresholds and the reset at midnight in the budget time zone."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.clock import today
from costs import budget, metering, selectors, usage
from costs.budget import Reservation
from costs.models import AICostRecord, BudgetReservation, DailyBudget, UserUsage
from costs.tests.helpers import Tokens, count_enrichment, reserve
from costs.tests.helpers import settle_flat as settle

pytestmark = pytest.mark.django_db

D = Decimal
# Signals go out on commit: these tests commit for real.
committed = pytest.mark.django_db(transaction=True)


def day_row() -> DailyBudget:
    return DailyBudget.objects.get(day=today())


@pytest.fixture
def limit(settings):
    settings.AI_DAILY_BUDGET_CENTS = D("10")
    return D("10")


def test_it_reserves_then_settles_the_real_cost(flat_price, limit, user):
    reservation = reserve(D("3"), user=user)
    assert isinstance(reservation, Reservation)
    assert reservation.amount_cents == D("3.000000") and reservation.day == today()
    row = day_row()
    assert (row.reserved_cents, row.spent_cents) == (D("3"), D("0"))

    record = settle(reservation, user=user, tokens=2, cached_tokens=1, output_tokens=0)
    assert record.cost_cents == D("1.500000")  # 1 token at 1 ¢ + 1 cached at 0.5 ¢
    assert record.day == today() and record.user == user and record.reservation_id == reservation.id
    row = day_row()
    assert row.reserved_cents == 0
    assert row.spent_cents == D("1.5")
    assert row.operation_count == 1
    assert BudgetReservation.objects.get().state == "settled"


def test_it_refuses_what_would_pass_the_limit_and_allows_an_exact_fit(flat_price, limit):
    first = reserve(D("6"))
    assert reserve(D("4.000001")) is None
    second = reserve(D("4"))  # spent + reserved == limit
    assert first and second
    assert reserve(D("0.000001")) is None
    assert day_row().reserved_cents == D("10")
    assert budget.budget_breaker_state() == "closed"  # nothing is spent yet
    settle(first, tokens=6)
    settle(second, tokens=4)
    assert day_row().spent_cents == D("10")
    assert budget.budget_breaker_state() == "open"
    # A spent budget refuses even a free call.
    assert reserve(D("0")) is None


def test_a_zero_budget_refuses_everything(settings):
    settings.AI_DAILY_BUDGET_CENTS = 0
    assert reserve(D("0")) is None
    assert budget.budget_breaker_state() == "open"


def test_settling_twice_records_once(flat_price, limit, user):
    reservation = reserve(D("2"))
    first = settle(reservation, user=user, tokens=2)
    again = settle(reservation, user=user, tokens=2)
    assert again.pk == first.pk
    assert AICostRecord.objects.count() == 1
    row = day_row()
    assert (row.spent_cents, row.reserved_cents, row.operation_count) == (D("2"), 0, 1)


def test_release_gives_the_reservation_back_once(limit):
    reservation = reserve(D("4"))
    budget.budget_release(reservation=reservation)
    budget.budget_release(reservation=reservation)
    row = day_row()
    assert (row.reserved_cents, row.spent_cents, row.operation_count) == (0, 0, 0)
    assert BudgetReservation.objects.get().state == "released"


def test_an_expired_reservation_is_released(flat_price, limit, settings):
    settings.AI_RESERVATION_TIMEOUT_SECONDS = 600
    start = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0)
    with time_machine.travel(start + dt.timedelta(days=1), tick=False):
        reservation = reserve(D("4"))
        assert budget.budget_reservations_expire() == 0
    with time_machine.travel(start + dt.timedelta(days=1, seconds=599), tick=False):
        assert budget.budget_reservations_expire() == 0
    with time_machine.travel(start + dt.timedelta(days=1, seconds=600), tick=False):
        assert budget.budget_reservations_expire() == 1
        assert budget.budget_reservations_expire() == 0
        assert day_row().reserved_cents == 0
        assert BudgetReservation.objects.get().state == "expired"
        # The worker was only slow: its real cost is still recorded, reserved is not touched.
        record = settle(reservation, tokens=3)
        row = day_row()
        assert (row.spent_cents, row.reserved_cents, row.operation_count) == (D("3"), 0, 1)
        assert record.cost_cents == D("3")


def test_a_dead_workers_reservation_is_charged_when_it_expires(limit, settings):
    """Even without the sweep: a refused reserve looks for expired holds first. The provider
    may have billed the dead worker's call, so its hold is charged as an unreconciled row."""
    settings.AI_RESERVATION_TIMEOUT_SECONDS = 60
    start = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0)
    with time_machine.travel(start + dt.timedelta(days=1), tick=False):
        assert reserve(D("6"))  # then the worker dies
        assert reserve(D("5")) is None
        assert day_row().exhausted_at is None  # the hold in flight may still free room
    with time_machine.travel(start + dt.timedelta(days=1, seconds=61), tick=False):
        assert reserve(D("5")) is None
        row = day_row()
        assert (row.reserved_cents, row.spent_cents, row.operation_count) == (0, D("6"), 1)
        record = AICostRecord.objects.get()
        assert (record.reconciled, record.cost_cents) == (False, D("6"))
        assert row.exhausted_at is not None  # nothing in flight, and 5 ¢ cannot fit


def test_a_call_settled_after_midnight_counts_in_the_day_it_reserved(flat_price, limit, settings):
    settings.AI_BUDGET_TIMEZONE = "Europe/Berlin"
    with time_machine.travel(dt.datetime(2031, 3, 3, 22, 59, 59, tzinfo=dt.UTC), tick=False):
        reservation = reserve(D("2"))
    with time_machine.travel(dt.datetime(2031, 3, 3, 23, 0, 1, tzinfo=dt.UTC), tick=False):
        record = settle(reservation, tokens=2)
        assert today() == dt.date(2031, 3, 4)
    assert record.day == dt.date(2031, 3, 3)
    old = DailyBudget.objects.get(day=dt.date(2031, 3, 3))
    assert (old.spent_cents, old.reserved_cents) == (D("2"), 0)
    assert not DailyBudget.objects.filter(day=dt.date(2031, 3, 4), spent_cents__gt=0).exists()


def test_the_days_ledger_sum_equals_the_budget_rows_spend(flat_price, settings, make_user):
    settings.AI_DAILY_BUDGET_CENTS = D("1000")
    users = [make_user(f"u{i}@example.com") for i in range(3)]
    expected = D(0)
    for i in range(40):
        provider, model = ("local", "local-hash-v1") if i % 5 == 0 else ("openai", "gpt-4o-mini")
        with metering.meter(
            operation="embedding" if i % 2 else "classification", provider=provider,
            model=model, user_id=users[i % 3].pk, input_tokens=1200, max_output_tokens=120,
        ) as call:  # fmt: skip
            if i % 7 == 0:
                call.fail(outage=False)  # failed before any token was billed: released
                continue
            record = call.settle(
                model=model, usage=Tokens(1000 + 37 * i, output_tokens=13 * i, cached_tokens=11 * i)
            )
        expected += record.cost_cents
    row = day_row()
    ledger = AICostRecord.objects.filter(day=today()).aggregate(total=Sum("cost_cents"))["total"]
    assert ledger == row.spent_cents == expected
    assert AICostRecord.objects.filter(day=today()).count() == row.operation_count
    assert row.reserved_cents == 0
    usage = UserUsage.objects.filter(day=today()).aggregate(total=Sum("cost_cents"))["total"]
    assert usage == ledger
    # A free (local) call is still an operation.
    assert AICostRecord.objects.filter(provider="local", cost_cents=0).count() == 6
    assert selectors.ai_cost_tracking()["dailySpend"]["totalCents"] == ledger


@committed
def test_staff_pause_opens_the_breaker_and_refuses_reservations(limit, signal_log):
    assert budget.budget_pause() is True
    assert budget.budget_pause() is False
    assert budget.budget_breaker_state() == "open"
    assert reserve(D("1")) is None
    assert day_row().opened_at is not None
    assert budget.budget_resume() is True
    assert budget.budget_resume() is False
    assert budget.budget_breaker_state() == "closed"
    assert reserve(D("1")) is not None
    assert [(c["state"], c["reason"]) for c in signal_log.of("budget_breaker_changed")] == [
        ("open", "paused"),
        ("closed", "resumed"),
    ]


@committed
def test_raising_todays_budget_closes_the_breaker_at_once(flat_price, limit, signal_log):
    settle(reserve(D("10")), tokens=10)
    assert budget.budget_breaker_state() == "open"
    budget.budget_limit_set(limit_cents=D("25"))
    assert budget.budget_breaker_state() == "closed"
    assert day_row().opened_at is None
    assert reserve(D("15")) is not None
    snapshot = selectors.budget_snapshot()
    assert snapshot.limit_cents == D("25") and snapshot.limit_overridden
    budget.budget_limit_set(limit_cents=None)
    assert selectors.budget_snapshot().limit_cents == D("10")
    assert budget.budget_breaker_state() == "open"
    states = [c["state"] for c in signal_log.of("budget_breaker_changed")]
    assert states == ["open", "closed", "open"]


def test_a_changed_default_applies_to_today_at_once(limit, settings):
    assert reserve(D("10"))
    assert reserve(D("5")) is None
    settings.AI_DAILY_BUDGET_CENTS = D("15")
    assert reserve(D("5")) is not None


@committed
def test_thresholds_are_announced_once_per_day_in_order(flat_price, limit, signal_log):
    settle(reserve(D("4")), tokens=4)  # 40 %
    assert signal_log.of("budget_threshold_crossed") == []
    settle(reserve(D("6")), tokens=6, output_tokens=0)  # 100 %
    calls = signal_log.of("budget_threshold_crossed")
    assert [c["percent"] for c in calls] == [50, 75, 100]
    assert calls[-1]["spent_cents"] == D("10") and calls[-1]["limit_cents"] == D("10")
    assert calls[-1]["day"] == today()
    budget.budget_limit_set(limit_cents=D("100"))
    held = reserve(D("0"))
    budget.budget_limit_set(limit_cents=D("10"))
    settle(held, tokens=0)
    assert len(signal_log.of("budget_threshold_crossed")) == 3
    assert day_row().alerted_percent == 100


@committed
def test_one_settlement_jumping_past_the_limit_sends_every_threshold(flat_price, limit, signal_log):
    settle(reserve(D("4")), tokens=4)  # 40 %
    # Estimated 1 ¢, really 7 ¢: 40 % -> 110 % in one settlement.
    settle(reserve(D("1")), tokens=7)
    assert [c["percent"] for c in signal_log.of("budget_threshold_crossed")] == [50, 75, 100]


@committed
def test_signals_wait_for_the_commit(flat_price, limit, signal_log):
    with transaction.atomic():
        settle(reserve(D("10")), tokens=10)
        assert signal_log.of("budget_threshold_crossed") == []
    assert len(signal_log.of("budget_threshold_crossed")) == 3


@committed
def test_a_failing_receiver_does_not_break_settlement(flat_price, limit, caplog):
    from costs.signals import budget_threshold_crossed

    def broken(**kwargs):
        raise RuntimeError("receiver down")

    budget_threshold_crossed.connect(broken, weak=False)
    try:
        record = settle(reserve(D("10")), tokens=10)
    finally:
        budget_threshold_crossed.disconnect(broken)
    assert record.pk and day_row().spent_cents == D("10")
    assert any("receiver" in r.getMessage() for r in caplog.records)


@committed
def test_midnight_in_the_budget_time_zone_closes_the_breaker_and_starts_afresh(
    flat_price, limit, settings, user, signal_log
):
    settings.AI_BUDGET_TIMEZONE = "Asia/Tokyo"  # UTC+9: midnight is 15:00 UTC
    settings.USER_DAILY_MEMORY_LIMIT = 1
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1
    before = dt.datetime(2031, 5, 1, 14, 59, 59, tzinfo=dt.UTC)
    with time_machine.travel(before, tick=False):
        assert today() == dt.date(2031, 5, 1)
        settle(reserve(D("10")), tokens=10, user=user)
        usage.usage_record_memory_created(user=user)
        assert count_enrichment(user) is None
        assert budget.budget_breaker_state() == "open"
        assert count_enrichment(user) == "user_enrichment_limit"
        assert reserve(D("1")) is None
    with time_machine.travel(before + dt.timedelta(seconds=2), tick=False):
        assert today() == dt.date(2031, 5, 2)
        assert budget.budget_breaker_state() == "closed"
        assert count_enrichment(user) is None
        usage.usage_record_memory_created(user=user)  # a fresh count: no 429
        assert reserve(D("1")) is not None
        snapshot = selectors.budget_snapshot()
        assert (snapshot.spent_cents, snapshot.operation_count) == (0, 0)
        counted = UserUsage.objects.get(user=user, day=dt.date(2031, 5, 2))
        assert (counted.memories_created, counted.enrichments, counted.cost_cents) == (1, 1, 0)
    # Yesterday's numbers are kept, and its alerts do not repeat today.
    assert DailyBudget.objects.get(day=dt.date(2031, 5, 1)).spent_cents == D("10")
    assert [c["day"] for c in signal_log.of("budget_threshold_crossed")] == [
        dt.date(2031, 5, 1)
    ] * 3


def test_reserve_validates_its_operation(flat_price, limit):
    with pytest.raises(ValueError, match="operation"):
        reserve(D("1"), operation="summarise")
    assert not BudgetReservation.objects.exists()
