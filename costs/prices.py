"""The price data file (costs/data/prices.json, USD per 1M tokens) and its loader.

Used by the seeding migration (with the historical model) and by `manage.py costs_prices_load`.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

PRICES_FILE = Path(__file__).resolve().parent / "data" / "prices.json"
CENTS_PER_DOLLAR = Decimal(100)


def _usd_to_cents(value) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError("prices must be strings or integers in the data file, not floats")
    amount = Decimal(str(value))
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"bad price {value!r}")
    return amount * CENTS_PER_DOLLAR


def price_entries(path: Path = PRICES_FILE) -> list[dict]:
    """The file's entries as ModelPrice field values (cents per 1M tokens)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    entries = []
    for item in data["prices"]:
        effective_from = dt.datetime.fromisoformat(item["effective_from"].replace("Z", "+00:00"))
        if effective_from.tzinfo is None:
            raise ValueError(f"effective_from needs a time zone: {item['effective_from']}")
        entries.append(
            {
                "provider": item["provider"],
                "model": item["model"],
                "effective_from": effective_from,
                "input_cents_per_1m": _usd_to_cents(item["input"]),
                "cached_input_cents_per_1m": _usd_to_cents(item.get("cached_input")),
                "output_cents_per_1m": _usd_to_cents(item.get("output") or 0),
                "batch_input_cents_per_1m": _usd_to_cents(item.get("batch_input")),
                "batch_output_cents_per_1m": _usd_to_cents(item.get("batch_output")),
                "note": item.get("note", ""),
            }
        )
    return entries


def prices_load(*, model_class=None, path: Path = PRICES_FILE) -> tuple[int, int]:
    """Insert the file's prices that are missing; existing rows (same provider, model and
    effective_from) are left as staff may have edited them. Returns (created, existing)."""
    from .models import ModelPrice

    model_class = model_class or ModelPrice
    created = existing = 0
    for entry in price_entries(path):
        keys = {k: entry.pop(k) for k in ("provider", "model", "effective_from")}
        _, made = model_class.objects.get_or_create(**keys, defaults=entry)
        created += made
        existing += not made
    if model_class is ModelPrice:
        return created, existing
    from .pricing import prices_changed

    prices_changed()  # a historical model (a migration) sends no signals
    return created, existing
