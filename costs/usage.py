"""Per-user daily usage and limits: memories created, enrichment runs and AI cost per budget day.

Enrichment runs and cost are counted when a call is reserved (through `costs.metering`), so runs
later superseded or lost still count, and a limit check and its count are one conditional UPDATE:
concurrent callers cannot pass a limit."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.lookups import GreaterThanOrEqual

from common.clock import next_reset, seconds_until_reset, today
from common.errors import LimitExceededError

from . import signals
from .budget import Refusal
from .models import UserUsage
from .money import ZERO, cents, cents_value
from .signals import send_on_commit

logger = logging.getLogger(__name__)


def user_limits(user) -> tuple[int, int, Decimal]:
    """(memories, enrichments, cost cents) per day for `user` (or its id); 0 = no limit."""
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


def _notify(user_id: int, day: dt.date, limit: str) -> None:
    """Send user_limit_reached once per user, day and limit (compare-and-set on its flag)."""
    flag = _NOTIFIED[limit]
    UserUsage.objects.bulk_create([UserUsage(user_id=user_id, day=day)], ignore_conflicts=True)
    if UserUsage.objects.filter(user_id=user_id, day=day, **{flag: False}).update(**{flag: True}):
        logger.info("user %s reached the daily %s limit on %s", user_id, limit, day)
        send_on_commit(signals.user_limit_reached, UserUsage, user_id=user_id, limit=limit, day=day)


def _notify_reached(user_id: int, day: dt.date, *, enrichments: int, cost: Decimal) -> None:
    """After a count: announce each limit the user has now reached."""
    reached = Q()
    if enrichments:
        reached |= Q(enrichments__gte=enrichments, enrichment_limit_notified=False)
    if cost > 0:
        reached |= Q(
            GreaterThanOrEqual(F("cost_cents"), cents_value(cost)), cost_limit_notified=False
        )
    if not reached:
        return
    row = UserUsage.objects.filter(reached, user_id=user_id, day=day).first()
    if row is None:
        return
    if enrichments and row.enrichments >= enrichments:
        _notify(user_id, day, "enrichments")
    if cost > 0 and row.cost_cents >= cost:
        _notify(user_id, day, "cost")


def usage_reserve(
    *,
    user_id: int,
    day: dt.date,
    cost_cents: Decimal,
    enrichment: bool,
    limits: tuple[int, int, Decimal] | None = None,
) -> str | None:
    """Count a call about to be made for `user_id`: its estimated cost and, when it starts an
    enrichment run, the run. None if counted; else the Refusal (the user's daily enrichment or
    cost limit was already reached), nothing counted: announce it with usage_refusal_announce
    once the caller's transaction is over. `limits`: the user's, when the caller has them."""
    limits = limits or user_limits(user_id)
    if _usage_count(user_id, day, runs=int(enrichment), cost_cents=cost_cents, limits=limits):
        return None
    _, enrichment_limit, _ = limits
    row = UserUsage.objects.get(user_id=user_id, day=day)
    if enrichment and enrichment_limit and row.enrichments >= enrichment_limit:
        return Refusal.USER_ENRICHMENT_LIMIT
    return Refusal.USER_COST_LIMIT


def _limited(limits: tuple[int, int, Decimal], *, runs: int) -> bool:
    """Whether counting `runs` enrichment runs (and a cost) has a limit of the user to check."""
    _, enrichment_limit, cost_limit = limits
    return bool(runs and enrichment_limit) or cost_limit > 0


def _usage_count(
    user_id: int, day: dt.date, *, runs: int, cost_cents: Decimal, limits: tuple
) -> bool:
    """Count `runs` enrichment runs and `cost_cents` for the user in ONE conditional UPDATE,
    only if the user's limits allow them all (the runs stay within the enrichment limit; the
    cost limit is not reached yet); then announce the limits now reached. False: nothing
    counted."""
    _, enrichment_limit, cost_limit = limits
    condition = Q()
    if runs and enrichment_limit:
        condition &= Q(enrichments__lte=enrichment_limit - runs)
    if cost_limit > 0:
        condition &= Q(cost_cents__lt=cost_limit)
    changes = {"cost_cents": F("cost_cents") + cents_value(cost_cents)}
    if runs:
        changes["enrichments"] = F("enrichments") + runs
    if not _usage_add(user_id, day, condition=condition, **changes):
        return False
    _notify_reached(user_id, day, enrichments=enrichment_limit, cost=cost_limit)
    return True


def _limits_of(user_ids) -> dict[int, tuple[int, int, Decimal]]:
    """user_limits for many users, in one query."""
    from accounts.models import User

    users = User.objects.filter(pk__in=set(user_ids)).only(
        "daily_memory_limit", "daily_enrichment_limit", "daily_cost_limit_cents"
    )
    return {user.pk: user_limits(user) for user in users}


def _usage_add_many(day: dt.date, changes: dict[int, tuple[int, Decimal]]) -> None:
    """Add (enrichments, cost cents) to each user's row for `day`, creating missing rows: one
    INSERT ... ON CONFLICT DO UPDATE, rows in user order (the lock order of every writer)."""
    if not changes:
        return
    values = []
    params: list = []
    for user_id in sorted(changes):
        enrichments, cost = changes[user_id]
        values.append("(%s, %s, 0, %s, %s, false, false, false)")
        params += [
            user_id,
            day,
            enrichments,
            UserUsage._meta.get_field("cost_cents").get_prep_value(cost),
        ]
    table = UserUsage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, day, memories_created, enrichments, cost_microcents, "  # noqa: S608 - our own table name
            "memory_limit_notified, enrichment_limit_notified, cost_limit_notified) "
            f"VALUES {', '.join(values)} ON CONFLICT (user_id, day) DO UPDATE SET "
            f"enrichments = {table}.enrichments + EXCLUDED.enrichments, "
            f"cost_microcents = {table}.cost_microcents + EXCLUDED.cost_microcents",
            params,
        )


def usage_reserve_many(
    *, day: dt.date, calls: list[tuple[int | None, Decimal, bool]]
) -> dict[int, str]:
    """`usage_reserve` for a batch of calls, each (user id, estimated cost, starts an
    enrichment run): the refused ones by position, with their Refusal. Users without a limit
    that applies are counted together in one statement; each other user's calls in one
    conditional UPDATE when their limits allow them all, else one call at a time (so the calls
    that still fit are counted and only the rest refused)."""
    limits = _limits_of(user_id for user_id, _, _ in calls if user_id is not None)
    by_user: dict[int, list[int]] = {}
    for position, (user_id, _, _) in enumerate(calls):
        if user_id is not None and user_id in limits:
            by_user.setdefault(user_id, []).append(position)
    free: dict[int, tuple[int, Decimal]] = {}
    refused: dict[int, str] = {}
    for user_id in sorted(by_user):
        positions = by_user[user_id]
        runs = sum(int(calls[p][2]) for p in positions)
        total = sum((calls[p][1] for p in positions), ZERO)
        if not _limited(limits[user_id], runs=runs):
            free[user_id] = (runs, total)
        elif not _usage_count(user_id, day, runs=runs, cost_cents=total, limits=limits[user_id]):
            for position in positions:
                _, cost, enrichment = calls[position]
                refusal = usage_reserve(
                    user_id=user_id, day=day, cost_cents=cost, enrichment=enrichment,
                    limits=limits[user_id],
                )  # fmt: skip
                if refusal is not None:
                    refused[position] = refusal
    _usage_add_many(day, free)
    return refused


def usage_cost_changes(*, day: dt.date, changes: dict[int, Decimal]) -> None:
    """Correct users' counted cost once their calls settled (real cost minus estimate) or were
    given back (minus the estimate): (user id -> change), one statement; announce cost limits
    now reached."""
    changes = {user_id: change for user_id, change in changes.items() if change != ZERO}
    _usage_add_many(day, {user_id: (0, change) for user_id, change in changes.items()})
    grown = [user_id for user_id, change in changes.items() if change > 0]
    if grown:
        for user_id, (_, _, cost_limit) in _limits_of(grown).items():
            if cost_limit > 0:
                _notify_reached(user_id, day, enrichments=0, cost=cost_limit)


def usage_refusal_announce(*, user_id: int, day: dt.date, refusal: str) -> None:
    """After `usage_reserve` refused (and its transaction rolled back): tell staff, once."""
    limit = "enrichments" if refusal == Refusal.USER_ENRICHMENT_LIMIT else "cost"
    with transaction.atomic():
        _notify(user_id, day, limit)


def usage_record_memory_created(*, user) -> None:
    """Count one new memory for `user` today, or raise LimitExceededError (429) when the daily
    memory limit is reached. It runs in the creating transaction (memory_create calls it before
    the insert): the count and the check are one conditional UPDATE, so concurrent creates cannot
    pass the limit, and a failed create takes its count back with it. The UPDATE returns the new
    count, so reaching the limit is noticed without another read."""
    user_id = getattr(user, "pk", user)
    limit = user_limits(user)[0]
    day = today()
    sql = (
        f"UPDATE {UserUsage._meta.db_table} SET memories_created = memories_created + 1 "  # noqa: S608
        "WHERE user_id = %s AND day = %s"
        + (" AND memories_created < %s" if limit else "")
        + " RETURNING memories_created"
    )
    params = [user_id, day, limit] if limit else [user_id, day]
    for attempt in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            counted = cursor.fetchone()
        if counted is not None or attempt:
            break
        # The row may be missing, or created by another request just after our UPDATE looked.
        UserUsage.objects.bulk_create([UserUsage(user_id=user_id, day=day)], ignore_conflicts=True)
    if counted is None:
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
    if limit and counted[0] >= limit:
        _notify(user_id, day, "memories")
