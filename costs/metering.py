"""The one door into costs: every AI call — enrichment, search queries, re-embedding — is made
inside `meter()` (one call) or `meter_batch()` (a batch: one request for many memories, or many
concurrent calls), which ask the provider breaker, reserve the estimates in the day's budget and
in the users' usage, and afterwards settle the real costs, or release the holds, and tell the
breaker how the provider did. Calls made later or elsewhere (the Batch API) hold with
`batch_hold` and end with `batch_settle` / `batch_release`. Callers never orchestrate budget,
usage or breaker steps.

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
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Item:
    """One memory's share of a (batched) AI call."""

    key: Hashable  # the caller's name for it: a job id, a memory id, a custom_id
    user_id: int | None
    memory_id: object = None
    input_tokens: int = 0  # the caller's estimate from the text
    max_output_tokens: int = 0  # the call's max_completion_tokens
    counts_enrichment: bool = False  # starts an enrichment run of the user


@dataclass
class Hold:
    """What the budget, the breaker and the users' limits said to a batch."""

    reservations: dict[Hashable, Reservation] = field(default_factory=dict)
    refused: dict[Hashable, Refused] = field(default_factory=dict)


def _hold(
    *,
    operation: str,
    provider: str,
    model: str,
    items: list[Item],
    batch_api: bool = False,
    hold_seconds: int | None = None,
    on_held: Callable[[list[Hashable]], None] | None = None,
) -> Hold:
    quote = price_quote(provider=provider, model=model, batch=batch_api)
    requests = []
    # One estimate per distinct cap (a model with too few calls to know is asked each time).
    outputs = {
        cap: output_tokens_estimate(provider=provider, model=model, cap=cap)
        for cap in {item.max_output_tokens for item in items}
    }
    for item in items:
        output = outputs[item.max_output_tokens]
        requests.append(
            budget.HoldRequest(
                estimate_cents=quote.cost(input_tokens=item.input_tokens, output_tokens=output),
                user_id=item.user_id,
                memory_id=item.memory_id,
                input_tokens=item.input_tokens,
                output_tokens=output,
            )
        )
    users_refused: dict[int, str] = {}
    days: list[dt.date] = []

    def admit(day: dt.date, held: list[int]) -> dict[int, str]:
        # Inside the budget's holding transaction: budget then usage, the lock order of every
        # writer. The users' refusals are given back to the budget before it commits.
        days.append(day)
        refused = user_usage.usage_reserve_many(
            day=day,
            calls=[
                (items[i].user_id, requests[i].estimate_cents, items[i].counts_enrichment)
                for i in held
            ],
        )
        refused = {held[position]: reason for position, reason in refused.items()}
        users_refused.update(refused)
        if on_held is not None:
            counted = [
                items[i].key for i in held if i not in refused and items[i].counts_enrichment
            ]
            if counted:
                on_held(counted)
        return refused

    answers = budget.budget_reserve_many(
        requests=requests,
        operation=operation,
        provider=provider,
        model=model,
        batch_api=batch_api,
        hold_seconds=hold_seconds,
        admit=admit,
    )
    for announce in {(items[i].user_id, reason) for i, reason in users_refused.items()}:
        user_usage.usage_refusal_announce(user_id=announce[0], day=days[0], refusal=announce[1])
    hold = Hold()
    until: dict[str, dt.datetime] = {}
    for item, answer in zip(items, answers, strict=True):
        if isinstance(answer, Reservation):
            hold.reservations[item.key] = answer
        else:
            if answer not in until:
                until[answer] = refusal_until(answer)
            hold.refused[item.key] = Refused(answer, until[answer])
    return hold


def _breaker_refusal(items: list[Item]) -> Hold:
    """Every item refused: the provider breaker is open."""
    refused = Refused(Refusal.PROVIDER_BREAKER, refusal_until(Refusal.PROVIDER_BREAKER))
    return Hold(refused=dict.fromkeys((item.key for item in items), refused))


def batch_hold(
    *,
    operation: str,
    provider: str,
    model: str,
    items: list[Item],
    batch_api: bool = False,
    hold_seconds: int | None = None,
) -> Hold:
    """Hold budget for calls made later or elsewhere (the Batch API): the provider breaker, the
    day's budget (the items that fit) and each user's limits say which items may go. Each
    admitted item has its own reservation, settled with `batch_settle` or given back with
    `batch_release`; `hold_seconds` is how long before the sweep takes it for lost and charges
    its estimate unreconciled (a late settle replaces that charge)."""
    if not breaker.provider_breaker_allow():
        return _breaker_refusal(items)
    try:
        return _hold(
            operation=operation, provider=provider, model=model, items=items,
            batch_api=batch_api, hold_seconds=hold_seconds,
        )  # fmt: skip
    finally:
        breaker.provider_breaker_release_probe()  # the submission itself is not judged


def batch_settle(*, results: list[tuple[int, str, TokenUsage]]) -> list[AICostRecord]:
    """Record held calls that the provider answered: (reservation id, model answered, usage)
    each, one ledger row per reservation, in one transaction with the users' cost. Idempotent
    per reservation."""
    requests = [
        budget.SettleRequest(
            reservation_id, model, usage.input_tokens, usage.output_tokens, usage.cached_tokens
        )
        for reservation_id, model, usage in results
    ]
    with transaction.atomic():
        settlements = budget.budget_settle_many(results=requests)
        _usage_changes((s.record.user_id, s.record.day, s.cost_change_cents) for s in settlements)
    return [settlement.record for settlement in settlements]


def batch_release(*, reservation_ids: list[int]) -> Decimal:
    """Give held calls back (they failed with nothing billed), with the users' counted cost.
    Idempotent; returns the amount given back."""
    with transaction.atomic():
        released = budget.budget_release_many(reservation_ids=reservation_ids)
        _usage_changes((r.user_id, r.day, -r.amount_cents) for r in released)
    return sum((r.amount_cents for r in released), Decimal(0))


def _usage_changes(changes) -> None:
    """Correct the users' counted cost by day: real cost minus what was counted."""
    by_day: dict[dt.date, dict[int, Decimal]] = {}
    for user_id, day, change in changes:
        if user_id is not None and change:
            users = by_day.setdefault(day, {})
            users[user_id] = users.get(user_id, Decimal(0)) + change
    for day, users in by_day.items():
        user_usage.usage_cost_changes(day=day, changes=users)


class MeteredBatch:
    """Handed to the caller inside `meter_batch()`: the items admitted, the items refused, and
    a report per admitted item of how its call went (settle or fail), once. Reports may come
    from several threads; they are written together when the batch closes (or on `flush`)."""

    def __init__(self, hold: Hold, items: list[Item], model: str):
        self.hold = hold
        self.model = model
        self.admitted = [item for item in items if item.key in hold.reservations]
        self.refused = hold.refused
        self.records: dict[Hashable, AICostRecord] = {}
        self.settled = self.outage = self.failed = False
        self._pending: dict[Hashable, tuple[str, TokenUsage]] = {}
        self._billed: set[Hashable] = set()  # reported with usage: to be charged, never released
        self._done: set[Hashable] = set()
        self._lock = threading.Lock()

    def settle(self, key: Hashable, *, model: str, usage: TokenUsage) -> None:
        """The provider answered for item `key` and billed `usage`."""
        with self._lock:
            self._report(key)
            self._pending[key] = (model, usage)
            self._billed.add(key)
            self.settled = True

    def fail(self, key: Hashable, *, usage: TokenUsage | None = None, outage: bool = True) -> None:
        """Item `key`'s call failed. `usage`: tokens billed all the same (a malformed answer);
        `outage`: the failure counts toward opening the provider breaker (5xx, timeout,
        connection), which a rate limit or a refused input does not."""
        with self._lock:
            self._report(key)
            if usage is not None:
                self._pending[key] = (self.model, usage)
                self._billed.add(key)
            self.outage = self.outage or outage
            self.failed = True

    def _report(self, key: Hashable) -> None:
        if key not in self.hold.reservations:
            raise KeyError(f"{key!r} was not admitted")
        if key in self._done:
            raise ValueError(f"{key!r} was reported already")
        self._done.add(key)

    def flush(self) -> dict[Hashable, AICostRecord]:
        """Write the settles reported so far; returns their ledger rows by key."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            keys = list(pending)
            results = [
                (self.hold.reservations[key].id, pending[key][0], pending[key][1]) for key in keys
            ]
            self.records.update(zip(keys, batch_settle(results=results), strict=True))
        return self.records

    def close(self) -> None:
        """Write the settles and give back every admitted item the provider did not bill. If
        writing the settles fails, the unbilled items are given back all the same; a billed one
        left unwritten stays held until its reservation expires and is charged its estimate."""
        try:
            self.flush()
        finally:
            unbilled = [
                reservation.id
                for key, reservation in self.hold.reservations.items()
                if key not in self._billed
            ]
            batch_release(reservation_ids=unbilled)


@contextmanager
def meter_batch(
    *,
    operation: str,
    provider: str,
    model: str,
    items: list[Item],
    breaker_quiet: bool = False,
    on_held: Callable[[list[Hashable]], None] | None = None,
) -> Iterator[MeteredBatch]:
    """Make one batched AI call (or several concurrent ones) inside the budget: one hold for
    the batch, one reservation per item, one settle. Items refused (the breaker, the budget,
    the user's limits) are in `batch.refused` with their Refused and must not be sent.

    `breaker_quiet`: the caller read the provider breaker closed with no failures in a statement
    of its own (`breaker.provider_breaker_quiet_sql`), so the door neither reads it before nor
    resets it after a success. `on_held(keys)` runs inside the holding transaction with the keys
    of the admitted items that count an enrichment run (the caller marks them counted).

    On leaving: the reports are written, every admitted item not settled is given back, and the
    breaker hears once for the batch: a success if any item was settled (a provider that
    answers is up), else an outage if one failed as such, else nothing."""
    if not breaker_quiet and not breaker.provider_breaker_allow():
        yield MeteredBatch(_breaker_refusal(items), items, model)
        return
    try:
        hold = _hold(
            operation=operation, provider=provider, model=model, items=items, on_held=on_held
        )
    except BaseException:
        breaker.provider_breaker_release_probe()
        raise
    batch = MeteredBatch(hold, items, model)
    started = time.monotonic()
    try:
        yield batch
    finally:
        try:
            batch.close()
        finally:
            outcome = (
                "settled" if batch.settled
                else "outage" if batch.outage
                else "no_judgement" if batch.failed
                else "released"
            )  # fmt: skip
            if hold.reservations:
                AI_CALL_DURATION.labels(operation, provider, outcome).observe(
                    time.monotonic() - started
                )
            if batch.settled:
                if not breaker_quiet:
                    breaker.provider_breaker_record_success()
            elif batch.outage:
                breaker.provider_breaker_record_failure()
            elif not breaker_quiet:
                breaker.provider_breaker_release_probe()


@dataclass
class MeteredCall:
    """Handed to the caller inside `meter()`: report how the one call went, once."""

    batch: MeteredBatch
    estimate_cents: Decimal
    record: AICostRecord | None = None

    def settle(self, *, model: str, usage: TokenUsage) -> AICostRecord:
        """The provider answered and billed `usage`: record its exact cost."""
        self.batch.settle(0, model=model, usage=usage)
        self.record = self.batch.flush()[0]
        return self.record

    def fail(self, *, usage: TokenUsage | None = None, outage: bool = True) -> None:
        """The call failed. `usage`: tokens billed all the same (a malformed answer); `outage`:
        the failure counts toward opening the provider breaker (5xx, timeout, connection), which
        a rate limit does not."""
        self.batch.fail(0, usage=usage, outage=outage)
        self.record = self.batch.flush().get(0)


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
    """Make one AI call inside the budget: `meter_batch` of one item. Raises Refused (nothing
    reserved, nothing counted) when the provider breaker, the day's budget or the user's limits
    say no. `input_tokens` is the caller's estimate from the text; output is reserved at
    `output_tokens_estimate`. `counts_enrichment`: this call starts an enrichment run, counted
    against the user's daily enrichment limit when reserved (also if the run is later
    superseded or lost).

    On leaving: a call neither settled nor failed is released; the breaker hears a success, an
    outage, or nothing (a refusal, a rate limit, an error of ours frees a half-open probe)."""
    item = Item(
        key=0, user_id=user_id, memory_id=memory_id, input_tokens=input_tokens,
        max_output_tokens=max_output_tokens, counts_enrichment=counts_enrichment,
    )  # fmt: skip
    with meter_batch(operation=operation, provider=provider, model=model, items=[item]) as batch:
        if 0 in batch.refused:
            raise batch.refused[0]
        yield MeteredCall(batch, batch.hold.reservations[0].amount_cents)
