"""The one door into costs: every AI call — enrichment, search queries, re-embedding — is made
inside `meter()`, which asks the provider breaker, reserves the estimate in the day's budget and
in the user's usage, and afterwards settles the real cost, or releases the hold, and tells the
breaker how the provider did. Callers never orchestrate budget, usage or breaker steps.

    with meter(operation="embedding", provider="openai", model=m, user_id=u.pk,
               input_tokens=n) as call:
        try:
            result = client.embed(text)
        except ProviderError as error:
            call.fail(usage=error.usage, outage=not error.rate_limited)
            raise
        call.settle(model=result.model, usage=result.usage)

The door is provider-neutral: a usage is anything with `input_tokens`, `output_tokens` and
`cached_tokens`. It orchestrates budget, usage and breaker so that none of them calls another.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.clock import next_reset
from common.metrics import AI_CALL_DURATION

from . import breaker, budget
from . import usage as user_usage
from .budget import Refusal, Reservation
from .models import AICostRecord
from .pricing import price_quote

logger = logging.getLogger(__name__)

# Output tokens are reserved at this percentile of what the model used in its recent calls.
OUTPUT_PERCENTILE = 95
OUTPUT_SAMPLE = 200
OUTPUT_MIN_SAMPLE = 20
OUTPUT_CACHE_SECONDS = 30.0


class TokenUsage(Protocol):
    input_tokens: int
    output_tokens: int
    cached_tokens: int


class Refused(Exception):  # noqa: N818 - a refusal, not an error
    """The call may not be made now: `reason` (a budget.Refusal) and when to try again."""

    def __init__(self, reason: str, until: dt.datetime):
        super().__init__(f"{reason} until {until.isoformat()}")
        self.reason = reason
        self.until = until


def refusal_until(reason: str) -> dt.datetime:
    """When work refused for `reason` should try again (sooner if woken by a signal)."""
    if reason == Refusal.PROVIDER_BREAKER:
        return breaker.provider_breaker_reopens_at()
    if reason == Refusal.BUDGET_RESERVED:
        retry = timezone.now() + dt.timedelta(seconds=settings.ENRICHMENT_BUDGET_RETRY_SECONDS)
        return min(retry, next_reset())
    return next_reset()


# --- estimates ----------------------------------------------------------------------------------

_recent_output: dict[tuple[str, str], tuple[float, int]] = {}
_recent_output_lock = threading.Lock()


def output_tokens_estimate(*, provider: str, model: str, cap: int) -> int:
    """The output tokens to reserve for a call: the 95th percentile of what `model` used in its
    last 200 settled calls, never above `cap` (the call's max_completion_tokens); the cap itself
    until 20 calls are known. A known percentile is cached per process for 30 s."""
    if cap <= 0:
        return 0
    key = (provider, model)
    now = time.monotonic()
    with _recent_output_lock:
        cached = _recent_output.get(key)
    if cached is None or now - cached[0] > OUTPUT_CACHE_SECONDS:
        used = sorted(
            AICostRecord.objects.filter(provider=provider, model=model, reconciled=True)
            .order_by("-id")
            .values_list("output_tokens", flat=True)[:OUTPUT_SAMPLE]
        )
        if len(used) < OUTPUT_MIN_SAMPLE:
            return cap  # not known yet: ask again next time rather than cache the cap
        percentile = used[max(0, math.ceil(len(used) * OUTPUT_PERCENTILE / 100) - 1)]
        cached = (now, percentile)
        with _recent_output_lock:
            _recent_output[key] = cached
    return min(cap, cached[1])


def output_estimates_forget() -> None:
    """Tests: forget the cached percentiles."""
    with _recent_output_lock:
        _recent_output.clear()


# --- the door -----------------------------------------------------------------------------------


@dataclass
class MeteredCall:
    """Handed to the caller inside `meter()`: report how the call went, once."""

    reservation: Reservation
    model: str
    user_id: int | None
    estimate_cents: Decimal
    record: AICostRecord | None = None
    outcome: str = ""  # "settled" | "outage" | "no_judgement"

    def settle(self, *, model: str, usage: TokenUsage) -> AICostRecord:
        """The provider answered and billed `usage`: record its exact cost."""
        self.record = _settle(self, model=model, usage=usage)
        self.outcome = "settled"
        return self.record

    def fail(self, *, usage: TokenUsage | None = None, outage: bool = True) -> None:
        """The call failed. `usage`: tokens billed all the same (a malformed answer); `outage`:
        the failure counts toward opening the provider breaker (5xx, timeout, connection), which
        a rate limit does not."""
        if usage is not None:
            self.record = _settle(self, model=self.model, usage=usage)
        else:
            _release(self)
        self.outcome = "outage" if outage else "no_judgement"


def _settle(call: MeteredCall, *, model: str, usage: TokenUsage) -> AICostRecord:
    with transaction.atomic():
        settlement = budget.budget_settle(
            reservation=call.reservation,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
        )
        if call.user_id is not None:
            user_usage.usage_cost_change(
                user_id=call.user_id,
                day=call.reservation.day,
                cost_change_cents=settlement.cost_change_cents,
            )
    return settlement.record


def _release(call: MeteredCall) -> None:
    with transaction.atomic():
        given_back = budget.budget_release(reservation=call.reservation)
        if call.user_id is not None and given_back:
            user_usage.usage_cost_change(
                user_id=call.user_id, day=call.reservation.day, cost_change_cents=-given_back
            )


def _reserve(
    *,
    operation: str,
    provider: str,
    model: str,
    user_id: int | None,
    memory_id,
    input_tokens: int,
    output_tokens: int,
    counts_enrichment: bool,
) -> MeteredCall:
    estimate = price_quote(provider=provider, model=model).cost(
        input_tokens=input_tokens, output_tokens=output_tokens
    )
    # Budget then usage, in one transaction (the lock order of every writer). A refusal by the
    # budget commits what it declared (exhaustion, room wanted); a refusal by the user's limits
    # rolls the budget hold back and is announced after.
    refusal = None
    with transaction.atomic():
        held = budget.budget_reserve(
            estimate_cents=estimate,
            user_id=user_id,
            memory_id=memory_id,
            operation=operation,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        if isinstance(held, str):
            refusal = held
        elif user_id is not None:
            refusal = user_usage.usage_reserve(
                user_id=user_id, day=held.day, cost_cents=estimate, enrichment=counts_enrichment
            )
            if refusal is not None:
                transaction.set_rollback(True)
    if refusal is not None:
        if not isinstance(held, str):
            user_usage.usage_refusal_announce(user_id=user_id, day=held.day, refusal=refusal)
        raise Refused(refusal, refusal_until(refusal))
    return MeteredCall(reservation=held, model=model, user_id=user_id, estimate_cents=estimate)


@contextmanager
def meter(
    *,
    operation: str,
    provider: str,
    model: str,
    user_id: int | None,
    memory_id=None,
    input_tokens: int,
    max_output_tokens: int = 0,
    counts_enrichment: bool = False,
) -> Iterator[MeteredCall]:
    """Make one AI call inside the budget. Raises Refused (nothing reserved, nothing counted)
    when the provider breaker, the day's budget or the user's limits say no. `input_tokens` is
    the caller's estimate from the text; output is reserved at `output_tokens_estimate`.
    `counts_enrichment`: this call starts an enrichment run, counted against the user's daily
    enrichment limit when reserved (also if the run is later superseded or lost).

    On leaving: a call neither settled nor failed is released; the breaker hears a success, an
    outage, or nothing (a refusal, a rate limit, an error of ours frees a half-open probe)."""
    if not breaker.provider_breaker_allow():
        raise Refused(Refusal.PROVIDER_BREAKER, refusal_until(Refusal.PROVIDER_BREAKER))
    try:
        call = _reserve(
            operation=operation,
            provider=provider,
            model=model,
            user_id=user_id,
            memory_id=memory_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens_estimate(
                provider=provider, model=model, cap=max_output_tokens
            ),
            counts_enrichment=counts_enrichment,
        )
    except BaseException:
        breaker.provider_breaker_release_probe()
        raise
    started = time.monotonic()
    try:
        yield call
    finally:
        if not call.outcome:
            _release(call)
        AI_CALL_DURATION.labels(operation, provider, call.outcome or "released").observe(
            time.monotonic() - started
        )
        if call.outcome == "settled":
            breaker.provider_breaker_record_success()
        elif call.outcome == "outage":
            breaker.provider_breaker_record_failure()
        else:
            breaker.provider_breaker_release_probe()
