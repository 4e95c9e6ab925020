"""Pricing: which price applies to an AI call, and what its tokens cost in exact Decimal cents.

The price table is small and changes rarely, so each process keeps it in memory: a staff change
(a saved or deleted ModelPrice, `manage.py prices_load`) clears this process's copy at once and
bumps a version token in the shared cache on commit, which every other process checks at most
every PRICE_TABLE_CHECK_SECONDS; a copy older than PRICE_TABLE_MAX_AGE_SECONDS is reloaded
whatever the token says (a cache outage delays a change, never loses it)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from .models import ModelPrice
from .money import cents

logger = logging.getLogger(__name__)

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
# OpenAI answers with a dated snapshot of the model asked for: gpt-4o-mini-2024-07-18.
DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class PriceQuote:
    """The prices (US cents per 1M tokens) that apply to one call."""

    input_cents_per_1m: Decimal
    cached_input_cents_per_1m: Decimal
    output_cents_per_1m: Decimal
    fallback: bool = False
    price_id: int | None = None

    def cost(self, *, input_tokens: int, output_tokens: int = 0, cached_tokens: int = 0) -> Decimal:
        check_tokens(input_tokens, output_tokens, cached_tokens)
        micro = (
            (input_tokens - cached_tokens) * self.input_cents_per_1m
            + cached_tokens * self.cached_input_cents_per_1m
            + output_tokens * self.output_cents_per_1m
        )
        # One rounding, of the exact total: never a sum of rounded parts.
        return cents(micro / TOKENS_PER_PRICE_UNIT)


def check_tokens(input_tokens: int, output_tokens: int, cached_tokens: int) -> None:
    for name, value in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_tokens", cached_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    if cached_tokens > input_tokens:
        raise ValueError("cached_tokens are part of input_tokens and cannot exceed them")


# --- the in-process price table -----------------------------------------------------------------

PRICE_TABLE_CHECK_SECONDS = 5.0
PRICE_TABLE_MAX_AGE_SECONDS = 60.0
_VERSION_KEY = "costs:price-table-version"


class _PriceTable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, list[ModelPrice]] | None = None
        self.version = None
        self.loaded_at = self.checked_at = 0.0

    def forget(self) -> None:
        with self.lock:
            self.rows = None

    def rows_for(self, provider: str) -> list[ModelPrice]:
        """The provider's prices, newest first."""
        now = time.monotonic()
        with self.lock:
            rows = self.rows
            fresh = rows is not None and now - self.loaded_at < PRICE_TABLE_MAX_AGE_SECONDS
            if fresh and now - self.checked_at < PRICE_TABLE_CHECK_SECONDS:
                return rows.get(provider, [])
            known = self.version
        version = cache.get(_VERSION_KEY)
        if not fresh or version != known:
            loaded = defaultdict(list)
            for price in ModelPrice.objects.order_by("-effective_from", "-id"):
                loaded[price.provider].append(price)
            rows = dict(loaded)
            with self.lock:
                self.rows, self.version, self.loaded_at = rows, version, now
        with self.lock:
            self.checked_at = now
        # The copy read or loaded here: another thread may forget the table meanwhile.
        return rows.get(provider, [])


_table = _PriceTable()


def prices_forget() -> None:
    """Drop this process's copy of the price table (tests; prices_changed does it too)."""
    _table.forget()


def prices_changed() -> None:
    """The price table changed: this process reloads it at once, and every other process
    within PRICE_TABLE_CHECK_SECONDS of the commit."""
    _table.forget()
    transaction.on_commit(lambda: cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None))


@receiver(post_save, sender=ModelPrice, dispatch_uid="costs.prices_changed_save")
@receiver(post_delete, sender=ModelPrice, dispatch_uid="costs.prices_changed_delete")
def _price_saved(sender, raw: bool = False, **kwargs) -> None:
    prices_changed()


def _fallback_quote() -> PriceQuote:
    usd = Decimal(100)
    return PriceQuote(
        input_cents_per_1m=Decimal(settings.AI_FALLBACK_PRICE_INPUT_USD_PER_1M) * usd,
        cached_input_cents_per_1m=Decimal(settings.AI_FALLBACK_PRICE_CACHED_INPUT_USD_PER_1M) * usd,
        output_cents_per_1m=Decimal(settings.AI_FALLBACK_PRICE_OUTPUT_USD_PER_1M) * usd,
        fallback=True,
    )


def price_quote(*, provider: str, model: str, at: dt.datetime | None = None, batch: bool = False):
    """The price in force at `at` for `model`: its own entry, else the entry of its undated name
    (OpenAI answers `gpt-4o-mini-2024-07-18` for `gpt-4o-mini`), else the provider's "*" entry,
    else the configured fallback price, with a warning (never a silent 0)."""
    at = at or timezone.now()
    names = [model]
    undated = DATED_SNAPSHOT.sub("", model)
    if undated != model:
        names.append(undated)
    names.append("*")
    candidates = {}
    for price in _table.rows_for(provider):  # newest first
        if price.model in names and price.effective_from <= at:
            candidates.setdefault(price.model, price)
    price = next((candidates[name] for name in names if name in candidates), None)
    if price is None:
        logger.warning(
            "no price for %s/%s at %s: using the fallback price AI_FALLBACK_PRICE_*",
            provider,
            model,
            at.isoformat(),
        )
        return _fallback_quote()
    input_price = price.input_cents_per_1m
    output_price = price.output_cents_per_1m
    if batch:
        input_price = price.batch_input_cents_per_1m or input_price
        output_price = price.batch_output_cents_per_1m or output_price
    cached = price.cached_input_cents_per_1m
    return PriceQuote(
        input_cents_per_1m=input_price,
        cached_input_cents_per_1m=input_price if cached is None else cached,
        output_cents_per_1m=output_price,
        price_id=price.pk,
    )


def cost_compute(
    *,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int = 0,
    cached_tokens: int = 0,
    at: dt.datetime | None = None,
    batch: bool = False,
) -> Decimal:
    """The cost of one call in US cents (6 places, ROUND_HALF_EVEN) at the price in force at
    `at` (default now). `cached_tokens` are part of `input_tokens` (OpenAI's usage) and cost the
    cached price; `batch` uses the provider's batch prices where it has them."""
    quote = price_quote(provider=provider, model=model, at=at, batch=batch)
    return quote.cost(
        input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens
    )
