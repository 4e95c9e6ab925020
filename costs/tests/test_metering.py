"""The metering door: estimates from recent use, what the breaker hears, refusals that leave
nothing behind, and unreconciled rows that a late settle replaces."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import time_machine
from django.utils import timezone

from costs import budget, metering
from costs.models import AICostRecord, BudgetReservation, DailyBudget, ProviderBreaker, UserUsage
from costs.tests.helpers import Tokens, meter_flat, reserve, settle_flat

pytestmark = pytest.mark.django_db


def test_output_is_reserved_at_the_models_recent_95th_percentile_not_its_cap(flat_price, limit):
    assert metering.output_tokens_estimate(provider="test", model="flat", cap=120) == 120
    for used in [30] * 19 + [40]:
        with metering.meter(
            operation="classification", provider="test", model="flat", user_id=None,
            input_tokens=1, max_output_tokens=120,
        ) as call:  # fmt: skip
            call.settle(model="flat", usage=Tokens(1, output_tokens=used))
    metering.output_estimates_forget()
    assert metering.output_tokens_estimate(provider="test", model="flat", cap=120) == 30
    assert metering.output_tokens_estimate(provider="test", model="flat", cap=25) == 25
    with metering.meter(
        operation="classification", provider="test", model="flat", user_id=None,
        input_tokens=1, max_output_tokens=120,
    ) as call:  # fmt: skip
        # 1 input token at 1 ¢ + 30 output tokens at 2 ¢: the hold, not 1 + 240.
        assert call.estimate_cents == D("61")
        call.settle(model="flat", usage=Tokens(1, output_tokens=30))


def test_an_outage_counts_toward_the_provider_breaker_and_a_rate_limit_does_not(
    flat_price, limit, settings
):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 2
    for _ in range(3):
        with metering.meter(
            operation="embedding", provider="test", model="flat", user_id=None, input_tokens=1
        ) as call:
            call.fail(outage=False)  # a 429
    assert ProviderBreaker.objects.get().consecutive_failures == 0
    for _ in range(2):
        with metering.meter(
            operation="embedding", provider="test", model="flat", user_id=None, input_tokens=1
        ) as call:
            call.fail(outage=True)  # a 500
    assert ProviderBreaker.objects.get().state == "open"
    with pytest.raises(metering.Refused) as refused:
        meter_flat(1)
    assert refused.value.reason == "provider_breaker"
    assert refused.value.until > timezone.now()
    assert not AICostRecord.objects.exists()
    assert DailyBudget.objects.get().reserved_cents == 0


def test_a_refusal_by_the_users_limit_leaves_no_hold_behind(flat_price, limit, settings, user):
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1
    meter_flat(2, user=user, enrichment=True)
    with pytest.raises(metering.Refused) as refused:
        meter_flat(2, user=user, enrichment=True)
    assert refused.value.reason == "user_enrichment_limit"
    row = DailyBudget.objects.get()
    assert (row.reserved_cents, row.spent_cents) == (0, D("2"))
    assert BudgetReservation.objects.count() == 1
    assert UserUsage.objects.get(user=user).enrichments == 1
    assert UserUsage.objects.get(user=user).enrichment_limit_notified


def test_a_call_left_without_settle_or_fail_is_released(flat_price, limit, user):
    with metering.meter(
        operation="embedding", provider="test", model="flat", user_id=user.pk, input_tokens=5
    ):
        assert DailyBudget.objects.get().reserved_cents == D("5")
    assert DailyBudget.objects.get().reserved_cents == 0
    assert UserUsage.objects.get(user=user).cost_cents == 0
    assert BudgetReservation.objects.get().state == "released"


def test_a_late_settle_replaces_the_unreconciled_row_and_never_adds_a_second(
    flat_price, limit, settings
):
    settings.AI_RESERVATION_TIMEOUT_SECONDS = 60
    start = timezone.now()
    held = reserve(D("8"), operation="embedding")
    with time_machine.travel(start + dt.timedelta(seconds=61), tick=False):
        assert budget.budget_reservations_expire() == 1
    unreconciled = AICostRecord.objects.get()
    assert (unreconciled.reconciled, unreconciled.cost_cents) == (False, D("8"))
    assert unreconciled.operation == "embedding"
    row = DailyBudget.objects.get()
    assert (row.spent_cents, row.reserved_cents, row.operation_count) == (D("8"), 0, 1)

    record = settle_flat(held, tokens=3)  # the slow worker answers after all
    assert AICostRecord.objects.get().pk == record.pk  # one row for the call
    assert (record.reconciled, record.cost_cents) == (True, D("3"))
    row = DailyBudget.objects.get()
    assert (row.spent_cents, row.reserved_cents, row.operation_count) == (D("3"), 0, 1)
    assert settle_flat(held, tokens=3).pk == record.pk  # and settling again changes nothing
    assert AICostRecord.objects.count() == 1
