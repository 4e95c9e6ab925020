"""The daily AI budget: reserve-then-settle against one row per budget day, the ledger rows that
settles and expiries write, exhaustion, and staff's pause, resume and limit.

Shared state lives in database rows that every web and worker process sees; each transition is
one conditional UPDATE (compare-and-set), so it is correct with any number of processes. The
breaker rule itself is `models.budget_open_condition`, the one home every reader uses. Only
`costs.metering` calls the reserve, settle and release steps; staff tools call the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.lookups import GreaterThan, LessThanOrEqual
from django.utils import timezone

from common.clock import today

from . import signals
from .models import (
    AICostRecord,
    BudgetReservation,
    DailyBudget,
    DailyCostTotal,
    Operation,
    budget_default_limit,
    budget_limit_expression,
    budget_open_condition,
)
from .money import ZERO, cents, cents_value
from .pricing import check_tokens, price_quote
from .rollups import ledger_rows_counted
from .selectors import budget_open_reason, budget_snapshot
from .signals import send_on_commit

logger = logging.getLogger(__name__)


class Refusal:
    """Why a call may not be made now (also the deferral reasons enrichment shows staff)."""

    BUDGET_PAUSED = budget_open_reason(paused=True)
    BUDGET_EXHAUSTED = budget_open_reason(paused=False)
    # Under the limit, but reservations in flight hold the rest; they may settle for less.
    BUDGET_RESERVED = "budget_reserved"
    USER_ENRICHMENT_LIMIT = "user_enrichment_limit"
    USER_COST_LIMIT = "user_cost_limit"
    PROVIDER_BREAKER = "provider_breaker"

    # Refusals that end when the budget breaker closes (resume, a raised limit, the reset).
    BUDGET = (BUDGET_PAUSED, BUDGET_EXHAUSTED)


@dataclass(frozen=True)
class Reservation:
    """Budget held for one AI call: settle it with the real cost, or release it."""

    id: int
    day: dt.date
    amount_cents: Decimal


@dataclass(frozen=True)
class Settlement:
    record: AICostRecord
    # How much the call's cost differs from what was counted for it so far (the estimate while
    # the reservation was held or charged unreconciled; nothing once released).
    cost_change_cents: Decimal


def _day_refresh(day: dt.date, *, reason: str | None = None) -> None:
    """Inside a transaction that changed the day's row: announce newly crossed thresholds (each
    once per day, by compare-and-set on alerted_percent) and record the breaker's opening or
    closing in opened_at. An exhausted budget has crossed every threshold up to 100 %. Signals
    go out on commit."""
    row = DailyBudget.objects.with_state().select_for_update().filter(day=day).first()
    if row is None:
        return
    limit = row.effective_limit_cents
    spent = row.spent_cents
    if limit > 0 or row.exhausted_at is not None:
        crossed = [
            p
            for p in settings.AI_BUDGET_ALERT_THRESHOLDS
            if spent * 100 >= p * limit or (row.exhausted_at is not None and p <= 100)
        ]
        new = [p for p in crossed if p > row.alerted_percent]
        if new and DailyBudget.objects.filter(
            pk=row.pk, alerted_percent=row.alerted_percent
        ).update(alerted_percent=max(new)):
            for percent in new:
                send_on_commit(
                    signals.budget_threshold_crossed,
                    DailyBudget,
                    day=day,
                    percent=percent,
                    spent_cents=spent,
                    limit_cents=limit,
                    exhausted=row.exhausted_at is not None,
                )
    now = timezone.now()
    if row.is_open and row.opened_at is None:
        if DailyBudget.objects.filter(pk=row.pk, opened_at__isnull=True).update(opened_at=now):
            send_on_commit(
                signals.budget_breaker_changed,
                DailyBudget,
                day=day,
                state="open",
                reason=reason or budget_open_reason(paused=row.paused),
            )
    elif not row.is_open and row.opened_at is not None:
        if DailyBudget.objects.filter(pk=row.pk, opened_at=row.opened_at).update(opened_at=None):
            send_on_commit(
                signals.budget_breaker_changed,
                DailyBudget,
                day=day,
                state="closed",
                reason=reason or "limit_changed",
            )


def _room_freed(day: dt.date) -> None:
    """Inside the transaction that gave budget back: wake the calls refused while it was held."""
    if DailyBudget.objects.filter(day=day, room_wanted=True).update(room_wanted=False):
        send_on_commit(signals.budget_room_freed, DailyBudget, day=day)


@dataclass(frozen=True)
class HoldRequest:
    """One AI call (or one item of a batched call) to hold budget for."""

    estimate_cents: Decimal
    user_id: int | None = None
    memory_id: object = None
    input_tokens: int = 0
    output_tokens: int = 0


# admit(day, held request indexes) -> {index: Refusal}: a further say (the users' limits), asked
# inside the holding transaction; the refused are given back before the transaction ends.
Admit = Callable[[dt.date, list[int]], dict[int, str]]


def budget_reserve(
    *,
    estimate_cents: Decimal,
    user_id: int | None,
    memory_id,
    operation: str,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
) -> Reservation | str:
    """Hold `estimate_cents` of today's budget for one AI call, or answer why not (a Refusal):
    `budget_reserve_many` with one request."""
    request = HoldRequest(estimate_cents, user_id, memory_id, input_tokens, output_tokens)
    return budget_reserve_many(
        requests=[request], operation=operation, provider=provider, model=model
    )[0]


def budget_reserve_many(
    *,
    requests: list[HoldRequest],
    operation: str,
    provider: str,
    model: str,
    batch_api: bool = False,
    hold_seconds: int | None = None,
    admit: Admit | None = None,
) -> list[Reservation | str]:
    """Hold today's budget for each request: one answer per request, its Reservation or the
    Refusal that kept it out. Each held request gets its own reservation row.

    The check and the hold are ONE conditional UPDATE of the day's row, so concurrent callers in
    any number of processes can never hold more than the limit between them. When the whole
    batch does not fit, the longest prefix that fits is held and the rest refused (they wait
    for room). A refusal first gives back reservations left behind by dead workers and tries
    once more. When nothing fits and no reservation is in flight that could free room, the
    budget is exhausted: the breaker opens and the 100 % alert goes out, although spend is below
    the limit. `hold_seconds`: how long before the sweep takes a hold for lost (default
    AI_RESERVATION_TIMEOUT_SECONDS)."""
    estimates = [cents(r.estimate_cents) for r in requests]
    if any(estimate < 0 for estimate in estimates):
        raise ValueError("estimate_cents must not be negative")
    if operation not in Operation.values:
        raise ValueError(f"operation must be one of {Operation.values}, not {operation!r}")
    if not requests:
        return []
    lifetime = dt.timedelta(seconds=hold_seconds or settings.AI_RESERVATION_TIMEOUT_SECONDS)
    day = today()
    count = len(requests)  # hold the first `count` requests
    row_seen = expired_checked = False
    while True:
        now = timezone.now()
        total = sum(estimates[:count], ZERO)
        with transaction.atomic():
            if (
                DailyBudget.objects.filter(day=day)
                .filter(~budget_open_condition())
                .filter(
                    LessThanOrEqual(
                        F("spent_cents") + F("reserved_cents") + cents_value(total),
                        budget_limit_expression(),
                    )
                )
                .update(reserved_cents=F("reserved_cents") + cents_value(total), updated_at=now)
            ):
                answers: list[Reservation | str] = [None] * len(requests)
                refused = admit(day, list(range(count))) if admit else {}
                for index, reason in refused.items():
                    answers[index] = reason
                given_back = sum((estimates[i] for i in refused), ZERO)
                if given_back:
                    DailyBudget.objects.filter(day=day).update(
                        reserved_cents=F("reserved_cents") - cents_value(given_back)
                    )
                kept = [i for i in range(count) if i not in refused]
                rows = BudgetReservation.objects.bulk_create(
                    [
                        BudgetReservation(
                            day=day,
                            amount_cents=estimates[i],
                            user_id=requests[i].user_id,
                            memory_id=requests[i].memory_id,
                            operation=operation,
                            provider=provider,
                            model=model,
                            input_tokens=requests[i].input_tokens,
                            output_tokens=requests[i].output_tokens,
                            batch_api=batch_api,
                            created_at=now,
                            expires_at=now + lifetime,
                        )
                        for i in kept
                    ]
                )
                for index, row in zip(kept, rows, strict=True):
                    answers[index] = Reservation(id=row.pk, day=day, amount_cents=estimates[index])
                break
        if not row_seen:
            # The day's row may be missing, or created by another process just after our
            # UPDATE looked: make sure it exists and ask again.
            DailyBudget.objects.ensure(day)
            row_seen = True
            continue
        if not expired_checked:
            expired_checked = True
            if budget_reservations_expire(now=now):
                continue
        fitting = _fitting(day, estimates[:count])
        if isinstance(fitting, str):
            return [fitting] * len(requests)
        if fitting == 0:
            return [_refusal(day=day, estimate=estimates[0])] * len(requests)
        count = min(fitting, count - 1)
    if count < len(requests):
        reason = _refusal(day=day, estimate=estimates[count])
        answers[count:] = [reason] * (len(requests) - count)
    return answers


def _fitting(day: dt.date, estimates: list[Decimal]) -> int | str:
    """How many of `estimates`, in order, fit the room the day has now; the breaker's reason
    when it is open."""
    row = DailyBudget.objects.with_state().filter(day=day).first()
    if row.is_open:
        return budget_open_reason(paused=row.paused)
    room = row.effective_limit_cents - row.spent_cents - row.reserved_cents
    fitting = 0
    for estimate in estimates:
        room -= estimate
        if room < 0:
            break
        fitting += 1
    return fitting


def _refusal(*, day: dt.date, estimate: Decimal) -> str:
    with transaction.atomic():
        # Nothing in flight and the estimate does not fit: declare the budget exhausted (one
        # conditional UPDATE, so it is exact however many callers are refused at once).
        if (
            DailyBudget.objects.filter(day=day, reserved_cents=0, exhausted_at__isnull=True)
            .filter(~budget_open_condition())
            .filter(
                GreaterThan(F("spent_cents") + cents_value(estimate), budget_limit_expression())
            )
            .update(exhausted_at=timezone.now())
        ):
            logger.warning("AI budget for %s exhausted: the rest cannot cover a call", day)
            _day_refresh(day, reason=Refusal.BUDGET_EXHAUSTED)
            return Refusal.BUDGET_EXHAUSTED
        row = DailyBudget.objects.with_state().filter(day=day).first()
        if row.is_open:
            return budget_open_reason(paused=row.paused)
        DailyBudget.objects.filter(day=day, room_wanted=False).update(room_wanted=True)
        return Refusal.BUDGET_RESERVED


def budget_settle(
    *,
    reservation: Reservation,
    model: str,
    input_tokens: int,
    output_tokens: int = 0,
    cached_tokens: int = 0,
) -> Settlement:
    """Record one finished AI call at its real cost: `budget_settle_many` of one."""
    result = SettleRequest(reservation.id, model, input_tokens, output_tokens, cached_tokens)
    return budget_settle_many(results=[result])[0]


@dataclass(frozen=True)
class SettleRequest:
    reservation_id: int
    model: str  # the model the provider answered
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class _DayChange:
    spent: Decimal = ZERO
    reserved: Decimal = ZERO
    operations: int = 0
    freed: bool = False


def budget_settle_many(*, results: list[SettleRequest]) -> list[Settlement]:
    """Record finished AI calls at their real cost, in one transaction: a ledger row each (at
    the batch rates for a Batch API hold), the reservations moved from reserved to spent and
    the days' operation counts; one Settlement per result.

    Idempotent per reservation: settling twice records once. A reservation that expired was
    charged at its estimate as an unreconciled ledger row: that row is replaced by the exact one
    (never a second row). One that was released is recorded honestly all the same."""
    for result in results:
        check_tokens(result.input_tokens, result.output_tokens, result.cached_tokens)
    if not results:
        return []
    now = timezone.now()
    ids = [result.reservation_id for result in results]
    with transaction.atomic():
        stored = {
            row.pk: row
            for row in BudgetReservation.objects.select_for_update()
            .filter(pk__in=ids)
            .order_by("pk")
        }
        existing = {
            row.reservation_id: row for row in AICostRecord.objects.filter(reservation_id__in=ids)
        }
        settlements: list[Settlement] = []
        records: list[AICostRecord] = []
        replaced: list[AICostRecord] = []
        days: dict[dt.date, _DayChange] = {}
        for result in results:
            row = stored.get(result.reservation_id)
            if row is None or row.state == BudgetReservation.State.SETTLED:
                # Settled before (or earlier in this call): its own row, nothing new.
                known = existing.get(result.reservation_id)
                if known is None:
                    raise ValueError(f"reservation {result.reservation_id} is unknown")
                settlements.append(Settlement(known, ZERO))
                continue
            quote = price_quote(
                provider=row.provider, model=result.model, at=now, batch=row.batch_api
            )
            cost = quote.cost(
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cached_tokens=result.cached_tokens,
            )
            change = days.setdefault(row.day, _DayChange())
            earlier = existing.get(row.pk)
            if row.state == BudgetReservation.State.ACTIVE:
                counted = row.amount_cents
                change.reserved += row.amount_cents
                change.spent += cost
                change.operations += 1
                change.freed = True
            elif row.state == BudgetReservation.State.EXPIRED and earlier is not None:
                # Replace the unreconciled charge: its estimate leaves spend, the real cost enters.
                counted = earlier.cost_cents
                change.spent += cost - earlier.cost_cents
                replaced.append(earlier)
                logger.warning(
                    "reservation %s settled after it expired: its unreconciled row (%s¢) is "
                    "replaced by the real cost %s¢",
                    row.pk,
                    counted,
                    cost,
                )
            else:
                counted = ZERO
                change.spent += cost
                change.operations += 1
                logger.warning(
                    "reservation %s was settled after it had been released; recording its real "
                    "cost %s¢ anyway",
                    row.pk,
                    cost,
                )
            row.state = BudgetReservation.State.SETTLED
            record = AICostRecord(
                user_id=row.user_id,
                memory_id=row.memory_id,
                operation=row.operation,
                provider=row.provider,
                model=result.model,
                input_tokens=result.input_tokens,
                cached_tokens=result.cached_tokens,
                output_tokens=result.output_tokens,
                cost_cents=cost,
                price_fallback=quote.fallback,
                batch_api=row.batch_api,
                reservation_id=row.pk,
                day=row.day,
                created_at=now,
            )
            records.append(record)
            existing[row.pk] = record
            settlements.append(Settlement(record, cost - counted))
        BudgetReservation.objects.filter(pk__in=[r.reservation_id for r in records]).update(
            state=BudgetReservation.State.SETTLED, finished_at=now
        )
        for earlier in replaced:
            earlier.delete()
        AICostRecord.objects.bulk_create(records)
        ledger_rows_counted(records)
        for day, change in days.items():
            changes = {
                "spent_cents": F("spent_cents") + cents_value(change.spent),
                "reserved_cents": F("reserved_cents") - cents_value(change.reserved),
                "operation_count": F("operation_count") + change.operations,
                "updated_at": now,
            }
            if day == today():
                changes["limit_cents"] = budget_limit_expression()
            DailyBudget.objects.filter(day=day).update(**changes)
            _day_refresh(day)
            if change.freed:
                _room_freed(day)
    return settlements


@dataclass(frozen=True)
class Released:
    reservation_id: int
    user_id: int | None
    day: dt.date
    amount_cents: Decimal


def budget_release(*, reservation: Reservation) -> Decimal:
    """Give a reservation back (the call failed before any tokens were billed). Idempotent;
    returns the amount given back (zero if it was no longer held)."""
    released = budget_release_many(reservation_ids=[reservation.id])
    return released[0].amount_cents if released else ZERO


def budget_release_many(*, reservation_ids: list[int]) -> list[Released]:
    """Give reservations back (their calls failed before any tokens were billed), in one
    transaction. Idempotent: returns the ones that were still held."""
    if not reservation_ids:
        return []
    now = timezone.now()
    with transaction.atomic():
        released = [
            Released(pk, user_id, day, amount)
            for pk, user_id, day, amount in BudgetReservation.objects.select_for_update()
            .filter(pk__in=reservation_ids, state=BudgetReservation.State.ACTIVE)
            .order_by("pk")
            .values_list("pk", "user_id", "day", "amount_cents")
        ]
        if not released:
            return []
        BudgetReservation.objects.filter(pk__in=[r.reservation_id for r in released]).update(
            state=BudgetReservation.State.RELEASED, finished_at=now
        )
        for day in {r.day for r in released}:
            amount = sum((r.amount_cents for r in released if r.day == day), ZERO)
            DailyBudget.objects.filter(day=day).update(
                reserved_cents=F("reserved_cents") - cents_value(amount), updated_at=now
            )
            _room_freed(day)
    return released


def budget_reservations_expire(*, now: dt.datetime | None = None) -> int:
    """Reservations past their expiry (their worker died, maybe after the provider answered and
    billed): each is charged at its estimate as an unreconciled ledger row, so the ledger never
    undercounts; a late settle replaces that row. Returns how many. The sweep calls this;
    budget_reserve also does before it refuses anyone."""
    now = now or timezone.now()
    stale = list(
        BudgetReservation.objects.filter(
            state=BudgetReservation.State.ACTIVE, expires_at__lte=now
        ).values_list("pk", flat=True)[:1000]
    )
    charged = 0
    for pk in stale:
        with transaction.atomic():
            if not BudgetReservation.objects.filter(
                pk=pk, state=BudgetReservation.State.ACTIVE
            ).update(state=BudgetReservation.State.EXPIRED, finished_at=now):
                continue
            stored = BudgetReservation.objects.get(pk=pk)
            AICostRecord.objects.create(
                user_id=stored.user_id,
                memory_id=stored.memory_id,
                operation=stored.operation or "classification",
                provider=stored.provider,
                model=stored.model,
                input_tokens=stored.input_tokens,
                output_tokens=stored.output_tokens,
                cost_cents=stored.amount_cents,
                batch_api=stored.batch_api,
                reconciled=False,
                reservation_id=pk,
                day=stored.day,
                created_at=now,
            )
            DailyBudget.objects.filter(day=stored.day).update(
                reserved_cents=F("reserved_cents") - cents_value(stored.amount_cents),
                spent_cents=F("spent_cents") + cents_value(stored.amount_cents),
                operation_count=F("operation_count") + 1,
                updated_at=now,
            )
            _day_refresh(stored.day)
            _room_freed(stored.day)
            charged += 1
    if charged:
        logger.warning(
            "%s budget reservation(s) expired without a settle: charged at their estimate as "
            "unreconciled ledger rows",
            charged,
        )
    return charged


def budget_breaker_state() -> str:
    """Today's budget breaker, "open" or "closed": the snapshot's."""
    return budget_snapshot().state


def budget_pause() -> bool:
    """Staff: stop AI calls until resumed or until the daily reset. True if it was running."""
    day = today()
    DailyBudget.objects.ensure(day)
    with transaction.atomic():
        changed = DailyBudget.objects.filter(day=day, paused=False).update(
            paused=True, updated_at=timezone.now()
        )
        _day_refresh(day, reason="paused")
    if changed:
        logger.warning("AI paused by staff for %s", day)
    return bool(changed)


def budget_resume() -> bool:
    """Staff: lift a pause (the breaker stays open if the budget is spent). True if paused."""
    day = today()
    with transaction.atomic():
        changed = DailyBudget.objects.filter(day=day, paused=True).update(
            paused=False, updated_at=timezone.now()
        )
        _day_refresh(day, reason="resumed")
    if changed:
        logger.warning("AI resumed by staff for %s", day)
    return bool(changed)


def budget_limit_set(*, limit_cents: Decimal | int | str | None) -> None:
    """Staff: set today's limit at once (None: back to AI_DAILY_BUDGET_CENTS). A changed limit
    clears a declared exhaustion (the next refused call declares it again if the rest still
    cannot cover it); raising the limit above the spend closes the breaker; lowering it can open
    it and cross alert thresholds."""
    day = today()
    DailyBudget.objects.ensure(day)
    with transaction.atomic():
        if limit_cents is None:
            changes = {"limit_overridden": False, "limit_cents": budget_default_limit()}
        else:
            limit = cents(limit_cents)
            if limit < 0:
                raise ValueError("the limit must not be negative")
            changes = {"limit_overridden": True, "limit_cents": limit}
        DailyBudget.objects.filter(day=day).update(
            **changes, exhausted_at=None, updated_at=timezone.now()
        )
        _day_refresh(day, reason="limit_changed")
    logger.warning("AI budget for %s set to %s", day, limit_cents)


def cost_totals_rebuild() -> int:
    """Rebuild the daily roll-ups from the ledger (after a bulk import); returns the rows."""
    with transaction.atomic():
        DailyCostTotal.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ai_cost_daily (day, operation, provider, model, count, "
                "input_tokens, cached_tokens, output_tokens, cost_microcents) "
                "SELECT day, operation, provider, model, COUNT(*), SUM(input_tokens), "
                "SUM(cached_tokens), SUM(output_tokens), SUM(cost_microcents) "
                "FROM ai_cost_tracking GROUP BY day, operation, provider, model"
            )
        return DailyCostTotal.objects.count()
