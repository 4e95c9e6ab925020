"""Races on the budget against PostgreSQL: many threads (each its own connection, like separate
workers) reserving, settling and releasing at once."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Sum

from common.clock import today
from costs import budget, metering
from costs.models import AICostRecord, BudgetReservation, DailyBudget, ModelPrice, UserUsage
from costs.money import cents
from costs.tests.helpers import meter_flat, reserve, settle_flat

from .conftest import EPOCH

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 24
D = Decimal


def run_threads(work, workers: int = WORKERS) -> list:
    barrier = threading.Barrier(workers)

    def thread(index):
        try:
            barrier.wait()
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(thread, range(workers)))


def test_the_budget_is_exact_under_a_race_of_reserving_and_settling_threads(
    settings, flat_price, make_user
):
    """Estimate == real cost (3 ¢), through the metering door: exactly floor(100 / 3) calls fit,
    never one more; a thread refused while others hold the rest tries again, and the budget is
    declared exhausted (breaker open at 99 %) once nothing in flight can free room."""
    assert connection.vendor == "postgresql"
    settings.AI_DAILY_BUDGET_CENTS = D("100")
    users = [make_user(f"racer{i}@example.com") for i in range(4)]

    def work(index):
        user = users[index % len(users)]
        calls = 0
        while True:
            try:
                meter_flat(3, user=user)
            except metering.Refused as refused:
                if refused.reason == "budget_reserved":
                    continue
                assert refused.reason == "budget_exhausted"
                return calls
            calls += 1

    calls = run_threads(work)
    row = DailyBudget.objects.get(day=today())
    assert sum(calls) == 33
    assert row.spent_cents == D("99")  # <= 100, and 100 - 99 < 3: nobody blocked under budget
    assert row.reserved_cents == 0
    assert row.operation_count == 33
    assert row.exhausted_at is not None and budget.budget_breaker_state() == "open"
    ledger = AICostRecord.objects.filter(day=today()).aggregate(
        n=Count("id"), total=Sum("cost_cents")
    )
    assert ledger == {"n": 33, "total": D("99")}
    assert UserUsage.objects.aggregate(total=Sum("cost_cents"))["total"] == D("99")
    assert not BudgetReservation.objects.filter(state="active").exists()


def test_spend_never_passes_the_limit_by_more_than_the_estimate_error(settings):
    """Random estimates, real costs from 20 % to 130 % of them, and failed calls released: spend
    stays within limit + the sum of overruns, reserved returns to 0, ledger == budget row."""
    assert connection.vendor == "postgresql"
    settings.AI_DAILY_BUDGET_CENTS = D("50")
    # 1 token = 0.000001 ¢, so a real cost can be any amount of micro-cents.
    ModelPrice.objects.create(
        provider="test", model="micro", input_cents_per_1m=D(1), effective_from=EPOCH
    )
    lock = threading.Lock()
    overrun = [D(0)]
    actual_total = [D(0)]

    def work(index):
        rng = random.Random(index)  # noqa: S311 - a reproducible test load
        refusals = 0
        while refusals < 3:
            estimate = cents(D(rng.randint(100_000, 3_000_000)) / 1_000_000)
            reservation = reserve(estimate)
            if reservation is None:
                refusals += 1
                continue
            if rng.random() < 0.15:
                budget.budget_release(reservation=reservation)
                continue
            tokens = int(estimate * 1_000_000 * D(rng.uniform(0.2, 1.3)).quantize(D("0.01")))
            record = settle_flat(
                reservation,
                user=None,
                memory=None,
                operation="embedding",
                provider="test",
                model="micro",
                input_tokens=tokens,
            )
            with lock:
                actual_total[0] += record.cost_cents
                overrun[0] += max(D(0), record.cost_cents - estimate)
        return refusals

    run_threads(work)
    row = DailyBudget.objects.get(day=today())
    limit = D("50")
    assert row.reserved_cents == 0
    assert row.spent_cents == actual_total[0]
    assert row.spent_cents <= limit + overrun[0]
    ledger = AICostRecord.objects.filter(day=today()).aggregate(
        n=Count("id"), total=Sum("cost_cents")
    )
    assert ledger["total"] == row.spent_cents
    assert ledger["n"] == row.operation_count
    assert not BudgetReservation.objects.filter(state="active").exists()
    # Every reservation ended exactly one way.
    states = dict(BudgetReservation.objects.values_list("state").annotate(n=Count("id")).order_by())
    assert states.get("settled", 0) == ledger["n"]


def test_settling_the_same_reservation_from_many_threads_records_it_once(settings, flat_price):
    assert connection.vendor == "postgresql"
    settings.AI_DAILY_BUDGET_CENTS = D("100")
    reservation = reserve(D("5"))

    def work(_):
        return settle_flat(reservation, tokens=4, operation="embedding").pk

    record_ids = run_threads(work, workers=16)
    assert len(set(record_ids)) == 1
    row = DailyBudget.objects.get(day=today())
    assert (row.spent_cents, row.reserved_cents, row.operation_count) == (D("4"), 0, 1)


def test_racing_to_create_the_days_row_creates_one(settings):
    assert connection.vendor == "postgresql"
    settings.AI_DAILY_BUDGET_CENTS = D("1000")
    results = run_threads(lambda _: reserve(D("1")))
    assert all(results)
    assert DailyBudget.objects.count() == 1
    assert DailyBudget.objects.get().reserved_cents == D(WORKERS)
