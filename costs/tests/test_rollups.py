"""The daily roll-ups (ai_cost_daily) equal the ledger's sums, to the micro-cent."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal as D

import pytest
from django.db import connection
from django.db.models import Count, Sum

from common.clock import today
from costs import budget
from costs.models import AICostRecord, DailyCostTotal
from costs.tests.helpers import reserve, settle_flat

GROUP = ("day", "operation", "provider", "model")


def ledger_sums() -> dict:
    rows = AICostRecord.objects.values(*GROUP).annotate(
        n=Count("id"), i=Sum("input_tokens"), c=Sum("cached_tokens"),
        o=Sum("output_tokens"), cost=Sum("cost_cents"),
    )  # fmt: skip
    return {tuple(r[k] for k in GROUP): (r["n"], r["i"], r["c"], r["o"], r["cost"]) for r in rows}


def rollup_sums() -> dict:
    return {
        tuple(getattr(t, k) for k in GROUP): (
            t.count,
            t.input_tokens,
            t.cached_tokens,
            t.output_tokens,
            t.cost_cents,
        )  # fmt: skip
        for t in DailyCostTotal.objects.all()
        if t.count
    }


def settle(tokens: int, operation: str = "classification", model: str = "flat"):
    reservation = reserve(D(tokens) * 3)
    return settle_flat(reservation,  user=None, memory=None, operation=operation,
        provider="test", model=model, input_tokens=tokens, cached_tokens=tokens // 3,
        output_tokens=2,
    )  # fmt: skip


@pytest.mark.django_db
def test_roll_ups_follow_every_ledger_row(flat_price):
    for tokens in (10, 7, 3):
        settle(tokens)
    settle(5, operation="embedding")
    settle(1, model="unpriced-model")  # priced by the fallback, still rolled up
    AICostRecord.objects.create(
        operation="embedding", provider="openai", model="text-embedding-3-small",
        input_tokens=1000, cost_cents=D("0.002"), day=today() - dt.timedelta(days=2),
    )  # fmt: skip
    assert rollup_sums() == ledger_sums()
    assert len(ledger_sums()) == 4

    AICostRecord.objects.filter(input_tokens=7).delete()  # the admin never does; still exact
    assert rollup_sums() == ledger_sums()


@pytest.mark.django_db
def test_a_rebuild_gives_the_same_roll_ups(flat_price):
    for tokens in (4, 9):
        settle(tokens)
    settle(2, operation="embedding")
    before = rollup_sums()
    assert budget.cost_totals_rebuild() == 2
    assert rollup_sums() == before == ledger_sums()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_roll_ups_stay_exact_under_concurrent_settlements(flat_price, settings):
    settings.AI_DAILY_BUDGET_CENTS = D(1_000_000)
    barrier = threading.Barrier(12)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                settle(1 + (n + i) % 4, operation=("classification", "embedding")[i % 2])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert AICostRecord.objects.count() == 60
    assert rollup_sums() == ledger_sums()
