"""Cost and budget use cases: pricing, the reserve-then-settle budget, both breakers and the
per-user daily limits. The enrichment pipeline calls these; the admin API, the admin site and
the commands call them too.

Shared state lives in database rows that every web and worker process sees; each transition is
one conditional UPDATE (compare-and-set), so it is correct with any number of processes, on
PostgreSQL and on SQLite. Money is Decimal cents (costs.money), never float.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, When
from django.db.models.lookups import LessThan, LessThanOrEqual
from django.utils import timezone

from common.clock import next_reset, seconds_until_reset, today
from common.errors import LimitExceededError

from . import signals
from .models import (
    AICostRecord,
    BudgetReservation,
    DailyBudget,
    ModelPrice,
    Operation,
    ProviderBreaker,
    UserUsage,
)
from .money import ZERO, CentsField, cents, cents_value
from .selectors import budget_default_limit, budget_limit_of

logger = logging.getLogger(__name__)

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
_DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


# --- pricing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceQuote:
    """The prices (US cents per 1M tokens) that apply to one call."""

    input_cents_per_1m: Decimal
    cached_input_cents_per_1m: Decimal
    output_cents_per_1m: Decimal
    fallback: bool = False
    price_id: int | None = None

    def cost(self, *, input_tokens: int, output_tokens: int = 0, cached_tokens: int = 0) -> Decimal:
        _check_tokens(input_tokens, output_tokens, cached_tokens)
        micro = (
            (input_tokens - cached_tokens) * self.input_cents_per_1m
            + cached_tokens * self.cached_input_cents_per_1m
            + output_tokens * self.output_cents_per_1m
        )
        # One rounding, of the exact total: never a sum of rounded parts.
        return cents(micro / TOKENS_PER_PRICE_UNIT)


def _check_tokens(input_tokens: int, output_tokens: int, cached_tokens: int) -> None:
    for name, value in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_tokens", cached_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    if cached_tokens > input_tokens:
        raise ValueError("cached_tokens are part of input_tokens and cannot exceed them")


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
    undated = _DATED_SNAPSHOT.sub("", model)
    if undated != model:
        names.append(undated)
    names.append("*")
    candidates = {}
    for price in ModelPrice.objects.filter(
        provider=provider, model__in=names, effective_from__lte=at
    ).order_by("-effective_from"):
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


# --- the daily budget ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """Budget held for one AI call: settle it with the real cost, or release it."""

    id: int
    day: dt.date
    amount_cents: Decimal


def _limit_expression():
    """The day's limit in SQL: the staff override, else AI_DAILY_BUDGET_CENTS as it is now."""
    return Case(
        When(limit_overridden=True, then=F("limit_cents")),
        default=cents_value(budget_default_limit()),
        output_field=CentsField(),
    )


def _budget_row_ensure(day: dt.date) -> None:
    """Create the day's row if it is missing; safe when many processes race to do it."""
    if not DailyBudget.objects.filter(day=day).exists():
        DailyBudget.objects.bulk_create(
            [DailyBudget(day=day, limit_cents=budget_default_limit())], ignore_conflicts=True
        )


def _signal_on_commit(signal, sender, **kwargs) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=sender, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "receiver %r of a costs signal failed: %r",
                    receiver,
                    result,
                    exc_info=(type(result), result, result.__traceback__),
                )

    transaction.on_commit(send)


def _budget_day_refresh(day: dt.date, *, reason: str | None = None) -> None:
    """Inside a transaction that changed the day's row: announce newly crossed thresholds (each
    once per day, by compare-and-set on alerted_percent) and record the breaker's opening or
    closing in opened_at. Signals go out on commit."""
    row = DailyBudget.objects.select_for_update().filter(day=day).first()
    if row is None:
        return
    limit = budget_limit_of(row)
    spent = row.spent_cents
    if limit > 0:
        crossed = [p for p in settings.AI_BUDGET_ALERT_THRESHOLDS if spent * 100 >= p * limit]
        new = [p for p in crossed if p > row.alerted_percent]
        if new and DailyBudget.objects.filter(
            pk=row.pk, alerted_percent=row.alerted_percent
        ).update(alerted_percent=max(new)):
            for percent in new:
                _signal_on_commit(
                    signals.budget_threshold_crossed,
                    DailyBudget,
                    day=day,
                    percent=percent,
                    spent_cents=spent,
                    limit_cents=limit,
                )
    is_open = row.paused or spent >= limit
    now = timezone.now()
    if is_open and row.opened_at is None:
        if DailyBudget.objects.filter(pk=row.pk, opened_at__isnull=True).update(opened_at=now):
            _signal_on_commit(
                signals.budget_breaker_changed,
                DailyBudget,
                day=day,
                state="open",
                reason=reason or ("paused" if row.paused else "exhausted"),
            )
    elif not is_open and row.opened_at is not None:
        if DailyBudget.objects.filter(pk=row.pk, opened_at=row.opened_at).update(opened_at=None):
            _signal_on_commit(
                signals.budget_breaker_changed,
                DailyBudget,
                day=day,
                state="closed",
                reason=reason or "limit_changed",
            )


def budget_reserve(*, estimate_cents: Decimal, user=None, memory=None) -> Reservation | None:
    """Hold `estimate_cents` of today's budget for one AI call, or None when it does not fit
    (spent + reserved + estimate would pass the limit, the budget is spent, or AI is paused).

    The check and the hold are ONE conditional UPDATE of the day's row, so concurrent callers in
    any number of processes can never hold more than the limit between them. A refusal first
    gives back reservations left behind by dead workers, then tries once more."""
    estimate = cents(estimate_cents)
    if estimate < 0:
        raise ValueError("estimate_cents must not be negative")
    day = today()
    row_seen = expired_checked = False
    for _ in range(4):
        now = timezone.now()
        with transaction.atomic():
            limit = _limit_expression()
            held = (
                DailyBudget.objects.filter(day=day, paused=False)
                .filter(LessThan(F("spent_cents"), limit))
                .filter(
                    LessThanOrEqual(
                        F("spent_cents") + F("reserved_cents") + cents_value(estimate), limit
                    )
                )
                .update(reserved_cents=F("reserved_cents") + cents_value(estimate), updated_at=now)
            )
            if held:
                reservation = BudgetReservation.objects.create(
                    day=day,
                    amount_cents=estimate,
                    user_id=getattr(user, "pk", user),
                    memory_id=getattr(memory, "pk", memory),
                    created_at=now,
                    expires_at=now + dt.timedelta(seconds=settings.AI_RESERVATION_TIMEOUT_SECONDS),
                )
                return Reservation(id=reservation.pk, day=day, amount_cents=estimate)
        if not row_seen:
            # The day's row may be missing, or created by another process just after our
            # UPDATE looked: make sure it exists and ask again.
            _budget_row_ensure(day)
            row_seen = True
            continue
        if not expired_checked:
            expired_checked = True
            if budget_reservations_expire(now=now):
                continue
        return None
    return None


def budget_settle(
    *,
    reservation: Reservation,
    user,
    memory,
    operation: str,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int = 0,
    cached_tokens: int = 0,
) -> AICostRecord:
    """Record one finished AI call at its real cost, in one transaction: the ledger row, the
    reservation moved from reserved to spent, the day's operation count and the user's cost.

    Idempotent per reservation: settling twice records once and returns the first record. A
    reservation that had already expired (its amount given back) is still recorded honestly:
    spent grows by the real cost, reserved is left alone."""
    if operation not in Operation.values:
        raise ValueError(f"operation must be one of {Operation.values}, not {operation!r}")
    _check_tokens(input_tokens, output_tokens, cached_tokens)
    now = timezone.now()
    quote = price_quote(provider=provider, model=model, at=now)
    cost = quote.cost(
        input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens
    )
    user_id = getattr(user, "pk", user)
    with transaction.atomic():
        existing = AICostRecord.objects.filter(reservation_id=reservation.id).first()
        if existing is not None:
            return existing
        stored = BudgetReservation.objects.filter(pk=reservation.id)
        stored = stored.values("day", "amount_cents").first()
        day = stored["day"] if stored else reservation.day
        still_held = BudgetReservation.objects.filter(
            pk=reservation.id, state=BudgetReservation.State.ACTIVE
        ).update(state=BudgetReservation.State.SETTLED, finished_at=now)
        if not still_held:
            given_back = BudgetReservation.objects.filter(
                pk=reservation.id,
                state__in=[BudgetReservation.State.EXPIRED, BudgetReservation.State.RELEASED],
            ).update(state=BudgetReservation.State.SETTLED, finished_at=now)
            if not given_back and stored is not None:
                # Settled by a concurrent call, which has committed (we waited on its lock).
                return AICostRecord.objects.get(reservation_id=reservation.id)
            logger.warning(
                "reservation %s was settled after it had expired or been released; "
                "recording its real cost %s¢ anyway",
                reservation.id,
                cost,
            )
        record = AICostRecord.objects.create(
            user_id=user_id,
            memory_id=getattr(memory, "pk", memory),
            operation=operation,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            cached_tokens=cached_tokens,
            output_tokens=output_tokens,
            cost_cents=cost,
            price_fallback=quote.fallback,
            reservation_id=reservation.id,
            day=day,
            created_at=now,
        )
        reserved = F("reserved_cents")
        if still_held:
            reserved = reserved - cents_value(stored["amount_cents"])
        changes = {
            "reserved_cents": reserved,
            "spent_cents": F("spent_cents") + cents_value(cost),
            "operation_count": F("operation_count") + 1,
            "updated_at": now,
        }
        if day == today():
            changes["limit_cents"] = _limit_expression()
        if not DailyBudget.objects.filter(day=day).update(**changes):
            _budget_row_ensure(day)
            DailyBudget.objects.filter(day=day).update(**changes)
        _budget_day_refresh(day)
        if user_id is not None:
            _usage_add(user_id, day, cost_cents=F("cost_cents") + cents_value(cost))
            _user_cost_limit_check(user if user is not None else user_id, user_id, day)
    return record


def cost_totals_rebuild() -> int:
    """Rebuild the daily roll-ups from the ledger (after a bulk import); returns the rows."""
    from .models import DailyCostTotal

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


def budget_release(*, reservation: Reservation) -> None:
    """Give a reservation back (the call failed before any tokens were billed). Idempotent."""
    now = timezone.now()
    with transaction.atomic():
        row = BudgetReservation.objects.filter(pk=reservation.id).values("day", "amount_cents")
        row = row.first()
        if row is None:
            return
        if BudgetReservation.objects.filter(
            pk=reservation.id, state=BudgetReservation.State.ACTIVE
        ).update(state=BudgetReservation.State.RELEASED, finished_at=now):
            DailyBudget.objects.filter(day=row["day"]).update(
                reserved_cents=F("reserved_cents") - cents_value(row["amount_cents"]),
                updated_at=now,
            )


def budget_reservations_expire(*, now: dt.datetime | None = None) -> int:
    """Give back reservations past their expiry (their worker died); returns how many. The
    sweep calls this; budget_reserve also does before it refuses anyone."""
    now = now or timezone.now()
    stale = list(
        BudgetReservation.objects.filter(
            state=BudgetReservation.State.ACTIVE, expires_at__lte=now
        ).values_list("pk", "day", "amount_cents")[:1000]
    )
    released = 0
    for pk, day, amount in stale:
        with transaction.atomic():
            if BudgetReservation.objects.filter(pk=pk, state=BudgetReservation.State.ACTIVE).update(
                state=BudgetReservation.State.EXPIRED, finished_at=now
            ):
                DailyBudget.objects.filter(day=day).update(
                    reserved_cents=F("reserved_cents") - cents_value(amount), updated_at=now
                )
                released += 1
    if released:
        logger.warning("released %s expired budget reservation(s)", released)
    return released


def budget_breaker_state() -> str:
    """Today's budget breaker: "open" when today's spend reached the limit or staff paused AI,
    else "closed". A new day starts closed."""
    row = DailyBudget.objects.filter(day=today()).first()
    if row is None:
        return "open" if budget_default_limit() <= 0 else "closed"
    return "open" if row.paused or row.spent_cents >= budget_limit_of(row) else "closed"


def budget_pause() -> bool:
    """Staff: stop AI calls until resumed or until the daily reset. True if it was running."""
    day = today()
    _budget_row_ensure(day)
    with transaction.atomic():
        changed = DailyBudget.objects.filter(day=day, paused=False).update(
            paused=True, updated_at=timezone.now()
        )
        _budget_day_refresh(day, reason="paused")
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
        _budget_day_refresh(day, reason="resumed")
    if changed:
        logger.warning("AI resumed by staff for %s", day)
    return bool(changed)


def budget_limit_set(*, limit_cents: Decimal | int | str | None) -> None:
    """Staff: set today's limit at once (None: back to AI_DAILY_BUDGET_CENTS). Raising it above
    the spend closes the breaker; lowering it can open it and cross alert thresholds."""
    day = today()
    _budget_row_ensure(day)
    with transaction.atomic():
        if limit_cents is None:
            changes = {"limit_overridden": False, "limit_cents": budget_default_limit()}
        else:
            limit = cents(limit_cents)
            if limit < 0:
                raise ValueError("the limit must not be negative")
            changes = {"limit_overridden": True, "limit_cents": limit}
        DailyBudget.objects.filter(day=day).update(**changes, updated_at=timezone.now())
        _budget_day_refresh(day, reason="limit_changed")
    logger.warning("AI budget for %s set to %s", day, limit_cents)


# --- the provider breaker -----------------------------------------------------------------------

_BREAKER = "default"
_State = ProviderBreaker.State


def _breaker() -> ProviderBreaker:
    breaker = ProviderBreaker.objects.filter(name=_BREAKER).first()
    if breaker is None:
        ProviderBreaker.objects.bulk_create([ProviderBreaker(name=_BREAKER)], ignore_conflicts=True)
        breaker = ProviderBreaker.objects.get(name=_BREAKER)
    return breaker


def _breaker_changed(previous: str, state: str, failures: int) -> None:
    log = logger.warning if state != _State.CLOSED else logger.info
    log("provider breaker %s -> %s after %s consecutive failure(s)", previous, state, failures)
    _signal_on_commit(
        signals.provider_breaker_changed,
        ProviderBreaker,
        state=state,
        previous=previous,
        consecutive_failures=failures,
    )


def provider_breaker_allow() -> bool:
    """May this caller call the AI provider now? Closed: yes. Open: no until the cool-down has
    passed; then exactly one caller across all processes wins the compare-and-set to half_open
    and probes; the others get False until the probe reports (or its probe timeout passes)."""
    breaker = _breaker()
    if breaker.state == _State.CLOSED:
        return True
    now = timezone.now()
    probe_until = now + dt.timedelta(seconds=settings.AI_PROVIDER_PROBE_TIMEOUT_SECONDS)
    if breaker.state == _State.OPEN:
        if now < breaker.since + dt.timedelta(seconds=settings.AI_PROVIDER_COOLDOWN_SECONDS):
            return False
        with transaction.atomic():
            won = ProviderBreaker.objects.filter(
                pk=breaker.pk, state=_State.OPEN, since=breaker.since
            ).update(state=_State.HALF_OPEN, since=now, probe_expires_at=probe_until)
            if won:
                _breaker_changed(_State.OPEN, _State.HALF_OPEN, breaker.consecutive_failures)
        return bool(won)
    # half_open: a probe is out. Replace it only if it never reported.
    if breaker.probe_expires_at is None or now < breaker.probe_expires_at:
        return False
    return bool(
        ProviderBreaker.objects.filter(
            pk=breaker.pk, state=_State.HALF_OPEN, probe_expires_at=breaker.probe_expires_at
        ).update(probe_expires_at=probe_until)
    )


def provider_breaker_record_success() -> None:
    """A provider call succeeded: a half-open probe closes the breaker; failures reset."""
    breaker = _breaker()
    if breaker.state == _State.HALF_OPEN:
        with transaction.atomic():
            if ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.HALF_OPEN).update(
                state=_State.CLOSED,
                since=timezone.now(),
                consecutive_failures=0,
                probe_expires_at=None,
            ):
                _breaker_changed(_State.HALF_OPEN, _State.CLOSED, 0)
    elif breaker.state == _State.CLOSED and breaker.consecutive_failures:
        ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.CLOSED).update(
            consecutive_failures=0
        )


def provider_breaker_record_failure() -> None:
    """A provider call failed (error, 429, 5xx, timeout). AI_PROVIDER_FAILURE_THRESHOLD in a
    row open the breaker; a failed half-open probe opens it again for another cool-down."""
    breaker = _breaker()
    now = timezone.now()
    with transaction.atomic():
        if breaker.state == _State.HALF_OPEN:
            if ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.HALF_OPEN).update(
                state=_State.OPEN,
                since=now,
                probe_expires_at=None,
                consecutive_failures=F("consecutive_failures") + 1,
            ):
                _breaker_changed(_State.HALF_OPEN, _State.OPEN, breaker.consecutive_failures + 1)
            return
        ProviderBreaker.objects.filter(pk=breaker.pk).update(
            consecutive_failures=F("consecutive_failures") + 1
        )
        if ProviderBreaker.objects.filter(
            pk=breaker.pk,
            state=_State.CLOSED,
            consecutive_failures__gte=settings.AI_PROVIDER_FAILURE_THRESHOLD,
        ).update(state=_State.OPEN, since=now):
            failures = ProviderBreaker.objects.values_list("consecutive_failures", flat=True)
            _breaker_changed(_State.CLOSED, _State.OPEN, failures.get(pk=breaker.pk))


def provider_breaker_release_probe() -> None:
    """The half-open probe ended without calling the provider (e.g. the budget refused it): let
    the next caller probe instead, without judging the provider either way."""
    breaker = _breaker()
    if breaker.state == _State.HALF_OPEN:
        ProviderBreaker.objects.filter(
            pk=breaker.pk, state=_State.HALF_OPEN, probe_expires_at=breaker.probe_expires_at
        ).update(probe_expires_at=timezone.now())


def provider_breaker_reset() -> None:
    """Staff: close the provider breaker now."""
    breaker = _breaker()
    with transaction.atomic():
        if (
            ProviderBreaker.objects.filter(pk=breaker.pk)
            .exclude(state=_State.CLOSED)
            .update(
                state=_State.CLOSED,
                since=timezone.now(),
                consecutive_failures=0,
                probe_expires_at=None,
            )
        ):
            _breaker_changed(breaker.state, _State.CLOSED, 0)


# --- per-user daily usage and limits ------------------------------------------------------------


def _user_limits(user) -> tuple[int, int, Decimal]:
    """(memories, enrichments, cost cents) per day for `user`; 0 = no limit."""
    from accounts.models import User

    if not isinstance(user, User):
        user = User.objects.only(
            "daily_memory_limit", "daily_enrichment_limit", "daily_cost_limit_cents"
        ).get(pk=user)
    memories = user.daily_memory_limit
    enrichments = user.daily_enrichment_limit
    cost = user.daily_cost_limit_cents
    return (
        settings.USER_DAILY_MEMORY_LIMIT if memories is None else memories,
        settings.USER_DAILY_ENRICHMENT_LIMIT if enrichments is None else enrichments,
        cents(settings.USER_DAILY_COST_CENTS if cost is None else cost),
    )


def _usage_add(user_id: int, day: dt.date, *, condition=None, **changes) -> bool:
    """Apply `changes` to the user's row for `day` (created if missing) when `condition` holds;
    one conditional UPDATE, so concurrent callers cannot pass a limit. False: refused."""
    rows = UserUsage.objects.filter(user_id=user_id, day=day)
    if condition is not None:
        rows = rows.filter(condition)
    if rows.update(**changes):
        return True
    # The row may be missing, or created by another request just after our UPDATE looked.
    UserUsage.objects.bulk_create([UserUsage(user_id=user_id, day=day)], ignore_conflicts=True)
    return bool(rows.update(**changes))


_NOTIFIED = {
    "memories": "memory_limit_notified",
    "enrichments": "enrichment_limit_notified",
    "cost": "cost_limit_notified",
}


def _user_limit_notify(user_id: int, day: dt.date, limit: str) -> None:
    """Send user_limit_reached once per user, day and limit (compare-and-set on its flag)."""
    flag = _NOTIFIED[limit]
    if not UserUsage.objects.filter(user_id=user_id, day=day).exists():
        UserUsage.objects.bulk_create([UserUsage(user_id=user_id, day=day)], ignore_conflicts=True)
    if UserUsage.objects.filter(user_id=user_id, day=day, **{flag: False}).update(**{flag: True}):
        logger.info("user %s reached the daily %s limit on %s", user_id, limit, day)
        _signal_on_commit(
            signals.user_limit_reached, UserUsage, user_id=user_id, limit=limit, day=day
        )


def _user_cost_limit_check(user, user_id: int, day: dt.date) -> None:
    cost_limit = _user_limits(user)[2]
    if (
        cost_limit > 0
        and UserUsage.objects.filter(user_id=user_id, day=day, cost_cents__gte=cost_limit).exists()
    ):
        _user_limit_notify(user_id, day, "cost")


def usage_check_enrichment(*, user) -> str | None:
    """May `user` have another memory enriched today? None if so, else the reason:
    "user_enrichment_limit" or "user_cost_limit" (USER_DAILY_* or the user's own limits)."""
    user_id = getattr(user, "pk", user)
    _, enrichment_limit, cost_limit = _user_limits(user)
    day = today()
    usage = UserUsage.objects.filter(user_id=user_id, day=day).first()
    enrichments = usage.enrichments if usage else 0
    spent = usage.cost_cents if usage else ZERO
    if enrichment_limit and enrichments >= enrichment_limit:
        _user_limit_notify(user_id, day, "enrichments")
        return "user_enrichment_limit"
    if cost_limit > 0 and spent >= cost_limit:
        _user_limit_notify(user_id, day, "cost")
        return "user_cost_limit"
    return None


def usage_record_enrichment(*, user) -> None:
    """Count one enrichment for `user` today."""
    user_id = getattr(user, "pk", user)
    day = today()
    _usage_add(user_id, day, enrichments=F("enrichments") + 1)
    limit = _user_limits(user)[1]
    if (
        limit
        and UserUsage.objects.filter(user_id=user_id, day=day, enrichments__gte=limit).exists()
    ):
        _user_limit_notify(user_id, day, "enrichments")


def usage_record_memory_created(*, user) -> None:
    """Count one new memory for `user` today, or raise LimitExceededError (429) when the daily
    memory limit is reached. Call it inside the creating transaction, before the insert: the
    count and the check are one conditional UPDATE, so concurrent creates cannot pass the limit,
    and a failed create takes its count back with it."""
    user_id = getattr(user, "pk", user)
    limit = _user_limits(user)[0]
    day = today()
    if not limit:
        _usage_add(user_id, day, memories_created=F("memories_created") + 1)
        return
    if not _usage_add(
        user_id,
        day,
        condition=Q(memories_created__lt=limit),
        memories_created=F("memories_created") + 1,
    ):
        wait = seconds_until_reset()
        resets_at = next_reset().astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        raise LimitExceededError(
            f"You reached your daily limit of {limit} "
            f"{'memory' if limit == 1 else 'memories'}; it resets at {resets_at}.",
            details={
                "limit": limit,
                "kind": "memories",
                "resetsAt": resets_at,
                "retryAfterSeconds": wait,
            },
            headers={"Retry-After": str(wait)},
        )
    if UserUsage.objects.filter(user_id=user_id, day=day, memories_created__gte=limit).exists():
        _user_limit_notify(user_id, day, "memories")
