"""Spending in tests: reserve and settle AI calls at the `flat_price` fixture's model
(provider "test", model "flat": 1 cent per input token)."""

from __future__ import annotations

from decimal import Decimal

from costs import services


def settle_flat(
    reservation, *, tokens: int, user=None, memory=None, operation="classification",
    model="flat", **extra,
):  # fmt: skip
    """Settle `reservation` as one call of `tokens` input tokens (extra: other token counts)."""
    return services.budget_settle(
        reservation=reservation, user=user, memory=memory, operation=operation,
        provider="test", model=model, input_tokens=tokens, **extra,
    )  # fmt: skip


def spend_flat(
    tokens: int, *, user=None, memory=None, operation="classification", model="flat",
    estimate=None,
):  # fmt: skip
    """Reserve (the estimate, by default `tokens` cents) and settle one call."""
    estimate = Decimal(tokens) if estimate is None else estimate
    reservation = services.budget_reserve(estimate_cents=estimate, user=user)
    return settle_flat(
        reservation, tokens=tokens, user=user, memory=memory, operation=operation, model=model
    )
