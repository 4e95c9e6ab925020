"""Spending in tests: reserve and settle AI calls at the `flat_price` fixture's model
(provider "test", model "flat": 1 cent per input token)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from costs import budget
from costs.models import BudgetReservation


def reserve(
    estimate_cents, *, user=None, memory=None, operation="classification", model="flat"
) -> budget.Reservation | None:
    """Hold `estimate_cents` for one "test" call; None when the budget refuses."""
    held = budget.budget_reserve(
        estimate_cents=Decimal(estimate_cents), user_id=getattr(user, "pk", user),
        memory_id=getattr(memory, "pk", memory), operation=operation, provider="test",
        model=model, input_tokens=0, output_tokens=0,
    )  # fmt: skip
    return None if isinstance(held, str) else held


def settle_flat(
    reservation, *, tokens: int | None = None, input_tokens: int | None = None, user=None,
    memory=None, operation=None, provider=None, model="flat", **extra,
):  # fmt: skip
    """Settle `reservation` as one call of `tokens` input tokens (extra: other token counts).
    `user`, `memory`, `operation` and `provider`, when given, are what the call was reserved
    for (tests reserve with `reserve`, which does not know them)."""
    described = {
        "user_id": getattr(user, "pk", user),
        "memory_id": getattr(memory, "pk", memory),
        "operation": operation,
        "provider": provider,
    }
    described = {k: v for k, v in described.items() if v is not None}
    if described:
        BudgetReservation.objects.filter(pk=reservation.id).update(**described)
    return budget.budget_settle(
        reservation=reservation, model=model,
        input_tokens=tokens if input_tokens is None else input_tokens, **extra,
    ).record  # fmt: skip


def spend_flat(
    tokens: int, *, user=None, memory=None, operation="classification", model="flat",
    estimate=None,
):  # fmt: skip
    """One call of `tokens` input tokens through the metering door, reserved at `estimate`
    cents (default `tokens`: the flat price is 1 cent per input token)."""
    return meter_flat(
        tokens, user=user, memory=memory, operation=operation, model=model,
        estimate_tokens=None if estimate is None else int(estimate),
    )  # fmt: skip


def count_enrichment(user, *, cost_cents="0") -> str | None:
    """Count one enrichment run for `user` today as the metering door does: None if counted,
    else the refusal (announced, as the door announces it)."""
    from common.clock import today
    from costs import usage

    user_id = getattr(user, "pk", user)
    refusal = usage.usage_reserve(
        user_id=user_id, day=today(), cost_cents=Decimal(cost_cents), enrichment=True
    )
    if refusal is not None:
        usage.usage_refusal_announce(user_id=user_id, day=today(), refusal=refusal)
    return refusal


@dataclass(frozen=True)
class Tokens:
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0


def meter_flat(
    tokens: int, *, user=None, memory=None, operation="classification", model="flat",
    estimate_tokens=None, enrichment=False,
):  # fmt: skip
    """One "test"/`model` call of `tokens` input tokens through the metering door (reserved at
    `estimate_tokens`, default `tokens`); raises metering.Refused when refused."""
    from costs import metering

    with metering.meter(
        operation=operation, provider="test", model=model, user_id=getattr(user, "pk", user),
        memory_id=getattr(memory, "pk", memory),
        input_tokens=tokens if estimate_tokens is None else estimate_tokens,
        counts_enrichment=enrichment,
    ) as call:  # fmt: skip
        call.settle(model=model, usage=Tokens(tokens))
    return call.record
