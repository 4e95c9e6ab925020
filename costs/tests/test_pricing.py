"""Prices and exact costs: hand-computed Decimal cents, cached tokens, effective dates,
fallback pricing, and the integer storage that keeps SQL arithmetic exact."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.core.management import call_command

from costs.models import AICostRecord, DailyBudget, ModelPrice
from costs.money import cents
from costs.prices import price_entries, prices_load
from costs.pricing import cost_compute, price_quote

pytestmark = pytest.mark.django_db


def D(value: str) -> Decimal:  # noqa: N802
    return Decimal(value)


# Prices in US cents per 1M tokens: gpt-4o-mini 15 / 7.5 cached / 60 out;
# gpt-4.1-mini 40 / 10 / 160; text-embedding-3-small 2; text-embedding-3-large 13.
@pytest.mark.parametrize(
    ("model", "input_tokens", "cached", "output", "expected"),
    [
        # (800 * 15 + 200 * 7.5 + 500 * 60) / 1e6 = (12000 + 1500 + 30000) / 1e6
        ("gpt-4o-mini", 1000, 200, 500, "0.043500"),
        # no cache: (1000 * 15 + 500 * 60) / 1e6
        ("gpt-4o-mini", 1000, 0, 500, "0.045000"),
        # (10000 * 40 + 2345 * 10 + 678 * 160) / 1e6 = (400000 + 23450 + 108480) / 1e6
        ("gpt-4.1-mini", 12345, 2345, 678, "0.531930"),
        # 52500 * 2 / 1e6
        ("text-embedding-3-small", 52500, 0, 0, "0.105000"),
        # 1234 * 13 / 1e6
        ("text-embedding-3-large", 1234, 0, 0, "0.016042"),
        # a whole 1M prompt, all of it cached: 1e6 * 7.5 / 1e6
        ("gpt-4o-mini", 1_000_000, 1_000_000, 0, "7.500000"),
    ],
)
def test_it_computes_exact_costs_against_hand_computed_values(
    model, input_tokens, cached, output, expected
):
    cost = cost_compute(
        provider="openai",
        model=model,
        input_tokens=input_tokens,
        cached_tokens=cached,
        output_tokens=output,
    )
    assert isinstance(cost, Decimal)
    assert cost == D(expected)
    assert cost.as_tuple().exponent == -6


def test_it_rounds_half_to_even_at_six_places(flat_price):
    ModelPrice.objects.create(
        provider="test",
        model="tiny",
        input_cents_per_1m=D("2.5"),
        cached_input_cents_per_1m=D("3.5"),
        output_cents_per_1m=D("0"),
        effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    # 1 token at 2.5 ¢/1M = 0.0000025 -> 0.000002 (half to even), not 0.000003
    assert cost_compute(provider="test", model="tiny", input_tokens=1) == D("0.000002")
    # 1 cached token at 3.5 ¢/1M = 0.0000035 -> 0.000004
    assert cost_compute(provider="test", model="tiny", input_tokens=1, cached_tokens=1) == D(
        "0.000004"
    )
    # 3 tokens = 0.0000075 -> 0.000008: rounded once, from the exact total
    assert cost_compute(provider="test", model="tiny", input_tokens=3) == D("0.000008")


def test_a_price_change_applies_only_to_calls_after_it():
    change = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    ModelPrice.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_cents_per_1m=D("30"),
        cached_input_cents_per_1m=D("15"),
        output_cents_per_1m=D("120"),
        effective_from=change,
    )
    before = cost_compute(
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=500,
        at=change - dt.timedelta(seconds=1),
    )
    after = cost_compute(
        provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=500, at=change
    )
    assert before == D("0.045000")
    assert after == D("0.090000")


def test_a_dated_snapshot_name_uses_its_models_price():
    assert cost_compute(
        provider="openai", model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=500
    ) == D("0.045000")


def test_the_local_provider_is_free_for_any_model():
    quote = price_quote(provider="local", model="local-rules-v1")
    assert not quote.fallback
    assert cost_compute(provider="local", model="anything", input_tokens=10**6) == 0


def test_an_unknown_model_uses_the_fallback_price_and_logs_it(caplog, settings):
    settings.AI_FALLBACK_PRICE_INPUT_USD_PER_1M = D("2.50")
    settings.AI_FALLBACK_PRICE_CACHED_INPUT_USD_PER_1M = D("1.25")
    settings.AI_FALLBACK_PRICE_OUTPUT_USD_PER_1M = D("10.00")
    caplog.set_level(logging.WARNING, logger="costs.pricing")
    cost = cost_compute(
        provider="openai",
        model="gpt-9-turbo",
        input_tokens=1000,
        cached_tokens=400,
        output_tokens=100,
    )
    # (600 * 250 + 400 * 125 + 100 * 1000) / 1e6 = (150000 + 50000 + 100000) / 1e6
    assert cost == D("0.300000")
    assert any(
        "gpt-9-turbo" in r.getMessage() and "fallback" in r.getMessage() for r in caplog.records
    )


def test_a_price_before_any_entry_uses_the_fallback():
    quote = price_quote(
        provider="openai", model="gpt-4o-mini", at=dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    )
    assert quote.fallback


def test_batch_prices_apply_when_asked():
    cost = cost_compute(
        provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=500, batch=True
    )
    # (1000 * 7.5 + 500 * 30) / 1e6
    assert cost == D("0.022500")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"input_tokens": 10, "output_tokens": -1}, "output_tokens"),
        ({"input_tokens": 10, "cached_tokens": 11}, "cached_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"input_tokens": True}, "input_tokens"),
    ],
)
def test_it_refuses_impossible_token_counts(tokens, message):
    with pytest.raises(ValueError, match=message):
        cost_compute(provider="openai", model="gpt-4o-mini", **tokens)


def test_money_is_never_a_float():
    with pytest.raises(TypeError):
        cents(0.1)
    assert cents("0.1234565") == D("0.123456")  # half to even
    assert cents(3) == D("3.000000")


def test_the_seeded_prices_are_the_data_file_in_cents():
    entries = {(e["provider"], e["model"]): e for e in price_entries()}
    mini = entries[("openai", "gpt-4o-mini")]
    assert mini["input_cents_per_1m"] == D("15")
    assert mini["cached_input_cents_per_1m"] == D("7.5")
    assert mini["output_cents_per_1m"] == D("60")
    row = ModelPrice.objects.get(provider="openai", model="gpt-4.1-mini")
    assert (row.input_cents_per_1m, row.cached_input_cents_per_1m, row.output_cents_per_1m) == (
        D("40"),
        D("10"),
        D("160"),
    )
    assert ModelPrice.objects.get(
        provider="openai", model="text-embedding-3-small"
    ).input_cents_per_1m == D("2")
    assert ModelPrice.objects.get(provider="local", model="*").input_cents_per_1m == 0


def test_loading_the_prices_again_keeps_staff_edits(capsys):
    ModelPrice.objects.filter(provider="openai", model="gpt-4o-mini").update(note="edited")
    created, existing = prices_load()
    assert created == 0 and existing == len(price_entries())
    assert ModelPrice.objects.get(provider="openai", model="gpt-4o-mini").note == "edited"
    call_command("costs_prices_load")
    assert "0 price(s) added" in capsys.readouterr().out


def test_sums_and_comparisons_in_sql_are_exact():
    """0.1 + 0.2 == 0.3 in the database too (floats would say otherwise)."""
    DailyBudget.objects.create(day=dt.date(2030, 1, 1), limit_cents=D("0.3"))
    for amount in ("0.1", "0.2"):
        AICostRecord.objects.create(
            operation="embedding",
            provider="test",
            model="m",
            cost_cents=D(amount),
            day=dt.date(2030, 1, 1),
        )
    from django.db.models import F, Sum

    from costs.money import cents_value

    assert AICostRecord.objects.aggregate(total=Sum("cost_cents"))["total"] == D("0.300000")
    DailyBudget.objects.update(spent_cents=F("spent_cents") + cents_value("0.1"))
    DailyBudget.objects.update(spent_cents=F("spent_cents") + cents_value("0.2"))
    assert DailyBudget.objects.filter(spent_cents=F("limit_cents")).count() == 1
    assert DailyBudget.objects.get().spent_cents == D("0.300000")


@pytest.mark.django_db(transaction=True)
def test_an_emptied_price_table_is_seeded_again_after_a_flush():
    call_command("flush", interactive=False, verbosity=0)
    assert ModelPrice.objects.filter(provider="openai", model="gpt-4o-mini").exists()
    assert not price_quote(provider="openai", model="gpt-4o-mini").fallback


def test_prices_are_read_once_per_process_and_a_staff_change_applies_at_once(
    django_assert_num_queries,
):
    quote = price_quote(provider="openai", model="gpt-4o-mini")
    with django_assert_num_queries(0):  # the table is in memory now
        assert price_quote(provider="openai", model="gpt-4o-mini-2024-07-18") == quote
    price = ModelPrice.objects.get(pk=quote.price_id)
    price.input_cents_per_1m = D("99")
    price.save()  # as the admin saves it
    assert price_quote(provider="openai", model="gpt-4o-mini").input_cents_per_1m == D("99")


def test_a_change_made_elsewhere_is_seen_once_the_shared_version_moves(monkeypatch):
    from costs import pricing

    monkeypatch.setattr(pricing, "PRICE_TABLE_CHECK_SECONDS", 0.0)
    quote = price_quote(provider="openai", model="gpt-4o-mini")
    # Another process changed the row: this one's copy still holds the old price...
    ModelPrice.objects.filter(pk=quote.price_id).update(input_cents_per_1m=D("77"))
    assert price_quote(provider="openai", model="gpt-4o-mini") == quote
    # ...until the version token in the shared cache moves (that process's commit did it).
    from django.core.cache import cache

    cache.set(pricing._VERSION_KEY, "another-version", timeout=None)
    assert price_quote(provider="openai", model="gpt-4o-mini").input_cents_per_1m == D("77")
