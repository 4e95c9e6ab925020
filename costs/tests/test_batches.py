"""The metering door for batches: one hold for many items, partial admission, per-user limits
per item, bulk settles with one ledger row per item, Batch API prices, and a statement count
that does not grow with the batch."""

from __future__ import annotations

import uuid
from decimal import Decimal as D

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from costs import metering
from costs.models import (
    AICostRecord,
    BudgetReservation,
    DailyBudget,
    DailyCostTotal,
    ModelPrice,
    UserUsage,
)
from costs.tests.conftest import EPOCH
from costs.tests.helpers import Tokens

pytestmark = pytest.mark.django_db


def items(users, *, tokens=10, enrichment=False, output=0):
    return [
        metering.Item(
            key=index, user_id=user.pk, memory_id=uuid.uuid4(), input_tokens=tokens,
            max_output_tokens=output, counts_enrichment=enrichment,
        )
        for index, user in enumerate(users)
    ]  # fmt: skip


def test_a_batch_holds_once_settles_each_item_and_gives_back_the_rest(flat_price, limit, make_user):
    alice, bob = (
        make_user(f"{uuid.uuid4().hex}@example.com"),
        make_user(f"{uuid.uuid4().hex}@example.com"),
    )
    batch_items = items([alice, alice, bob, bob])
    with metering.meter_batch(
        operation="embedding", provider="test", model="flat", items=batch_items
    ) as batch:
        assert [item.key for item in batch.admitted] == [0, 1, 2, 3]
        assert DailyBudget.objects.get().reserved_cents == D("40")
        batch.settle(0, model="flat", usage=Tokens(7))
        batch.settle(2, model="flat", usage=Tokens(8))
        batch.fail(3, usage=Tokens(9), outage=False)  # billed although it failed
        # item 1 is never reported: given back on leaving
    rows = AICostRecord.objects.order_by("cost_cents")
    assert [(r.memory_id, r.cost_cents) for r in rows] == [
        (batch_items[0].memory_id, D("7")),
        (batch_items[2].memory_id, D("8")),
        (batch_items[3].memory_id, D("9")),
    ]
    day = DailyBudget.objects.get()
    assert (day.spent_cents, day.reserved_cents, day.operation_count) == (D("24"), 0, 3)
    assert UserUsage.objects.get(user=alice).cost_cents == D("7")
    assert UserUsage.objects.get(user=bob).cost_cents == D("17")
    total = DailyCostTotal.objects.get()
    assert (total.count, total.cost_cents, total.input_tokens) == (3, D("24"), 24)
    states = sorted(BudgetReservation.objects.values_list("state", flat=True))
    assert states == ["released", "settled", "settled", "settled"]


def test_when_writing_the_settles_fails_the_unbilled_are_given_back_and_the_billed_stay_held(
    flat_price, limit, make_user, monkeypatch
):
    user = make_user(f"{uuid.uuid4().hex}@example.com")

    def broken_settle(*, results):
        raise RuntimeError("the ledger write failed")

    monkeypatch.setattr(metering, "batch_settle", broken_settle)
    batch_items = items([user] * 3)
    with pytest.raises(RuntimeError, match="ledger write failed"):
        with metering.meter_batch(
            operation="embedding", provider="test", model="flat", items=batch_items
        ) as batch:
            batch.settle(0, model="flat", usage=Tokens(7))  # billed
            batch.fail(1, outage=False)  # refused, not billed
            # item 2 never reported: not billed
    states = dict(BudgetReservation.objects.values_list("memory_id", "state"))
    # The billed one stays held until it expires (then charged its estimate); the rest is back.
    assert states == {
        batch_items[0].memory_id: "active",
        batch_items[1].memory_id: "released",
        batch_items[2].memory_id: "released",
    }
    assert DailyBudget.objects.get().reserved_cents == D("10")
    assert not AICostRecord.objects.exists()


def test_only_the_items_that_fit_the_budget_are_held_and_the_rest_wait_for_room(
    flat_price, settings, make_user
):
    settings.AI_DAILY_BUDGET_CENTS = D("25")
    alice = make_user(f"{uuid.uuid4().hex}@example.com")
    with metering.meter_batch(
        operation="embedding", provider="test", model="flat", items=items([alice] * 4)
    ) as batch:
        assert [item.key for item in batch.admitted] == [0, 1]
        assert {key: r.reason for key, r in batch.refused.items()} == {
            2: "budget_reserved",
            3: "budget_reserved",
        }
        for item in batch.admitted:
            batch.settle(item.key, model="flat", usage=Tokens(10))
    day = DailyBudget.objects.get()
    assert (day.spent_cents, day.reserved_cents, day.room_wanted) == (D("20"), 0, False)
    assert UserUsage.objects.get(user=alice).cost_cents == D("20")


def test_a_users_limit_refuses_that_users_items_and_gives_their_budget_back(
    flat_price, limit, make_user
):
    limited, free = (
        make_user(f"{uuid.uuid4().hex}@example.com"),
        make_user(f"{uuid.uuid4().hex}@example.com"),
    )
    limited.daily_enrichment_limit = 1
    limited.save()
    with metering.meter_batch(
        operation="classification", provider="test", model="flat",
        items=items([limited, free, limited, free], enrichment=True),
    ) as batch:  # fmt: skip
        assert [item.key for item in batch.admitted] == [0, 1, 3]
        assert batch.refused[2].reason == "user_enrichment_limit"
        assert DailyBudget.objects.get().reserved_cents == D("30")
        assert BudgetReservation.objects.count() == 3
    assert UserUsage.objects.get(user=limited).enrichments == 1
    assert UserUsage.objects.get(user=free).enrichments == 2
    assert DailyBudget.objects.get().reserved_cents == 0
    assert UserUsage.objects.get(user=free).cost_cents == 0  # nothing settled


def test_a_batch_api_hold_uses_the_batch_rates_and_settles_once(limit, make_user):
    ModelPrice.objects.create(
        provider="test", model="half", input_cents_per_1m=D(1_000_000),
        output_cents_per_1m=D(2_000_000), batch_input_cents_per_1m=D(500_000),
        batch_output_cents_per_1m=D(1_000_000), effective_from=EPOCH,
    )  # fmt: skip
    alice = make_user(f"{uuid.uuid4().hex}@example.com")
    hold = metering.batch_hold(
        operation="embedding", provider="test", model="half", items=items([alice, alice]),
        batch_api=True, hold_seconds=25 * 3600,
    )  # fmt: skip
    assert DailyBudget.objects.get().reserved_cents == D("10")  # 2 x 10 tokens at half price
    first, second = hold.reservations[0].id, hold.reservations[1].id
    records = metering.batch_settle(results=[(first, "half", Tokens(10))])
    assert records[0].cost_cents == D("5") and records[0].batch_api
    # Polled twice: the second settle records nothing new.
    again = metering.batch_settle(results=[(first, "half", Tokens(10))])
    assert again[0].pk == records[0].pk
    assert metering.batch_release(reservation_ids=[first, second]) == D("5")
    assert AICostRecord.objects.count() == 1
    day = DailyBudget.objects.get()
    assert (day.spent_cents, day.reserved_cents) == (D("5"), 0)
    assert UserUsage.objects.get(user=alice).cost_cents == D("5")


def _statements_for(size, users, **kind):
    with CaptureQueriesContext(connection) as queries:
        with metering.meter_batch(
            operation="embedding", provider="test", model="flat", items=items(users[:size], **kind)
        ) as batch:
            for item in batch.admitted:
                batch.settle(item.key, model="flat", usage=Tokens(5))
    return len(queries)


@pytest.mark.parametrize(
    "kind",
    [
        {},
        # First calls of enrichment runs, checked against each user's enrichment limit, for a
        # model with too few calls to know its output size.
        {"enrichment": True, "output": 50},
    ],
)
def test_a_batch_costs_the_same_statements_whatever_its_size(
    flat_price, limit, make_user, settings, kind
):
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1000
    users = [make_user(f"{uuid.uuid4().hex}@example.com") for _ in range(3)] * 10
    _statements_for(3, users, **kind)  # the day's rows and the price table exist from here on
    assert _statements_for(30, users, **kind) == _statements_for(3, users, **kind)
    assert AICostRecord.objects.count() == 36
