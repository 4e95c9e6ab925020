"""Running counts of memories and embeddings (memory_tally), kept in the writing transaction so
the staff stats read a few rows instead of counting every memory."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.db.models import Sum

from common.clock import day_start, today

from .models import Embedding, Memory, MemoryTally

FIELDS = ("created", "deleted", "deleted_same_day", "embeddings_added", "embeddings_removed")


def tally_add(*, user_id: int, **increments: int) -> None:
    """Add to today's row of the user's shard (created if missing), in the caller's
    transaction. One UPDATE on a normal day (written in SQL: it runs on every create, and the
    ORM's UPDATE costs more than the statement itself)."""
    _shard_add(user_id % MemoryTally.SHARDS, increments)


def tally_add_many(counts: dict[int, int], *, field: str) -> None:
    """Add `counts` (user id -> n) to `field`: one update per shard, in shard order."""
    shards: dict[int, int] = {}
    for user_id, count in counts.items():
        shard = user_id % MemoryTally.SHARDS
        shards[shard] = shards.get(shard, 0) + count
    for shard, count in sorted(shards.items()):
        _shard_add(shard, {field: count})


def _shard_add(shard: int, increments: dict[str, int]) -> None:
    changes = {name: value for name, value in increments.items() if value}
    if not changes:
        return
    if unknown := set(changes) - set(FIELDS):
        raise ValueError(f"not tally fields: {sorted(unknown)}")
    day = today()
    sql = (
        f"UPDATE {MemoryTally._meta.db_table} SET "  # noqa: S608 - names checked against FIELDS
        + ", ".join(f"{name} = {name} + %s" for name in changes)
        + " WHERE day = %s AND shard = %s"
    )
    params = [*changes.values(), day, shard]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.rowcount:
            return
        # The first change of the day on this shard: create the row (or find another request's).
        MemoryTally.objects.bulk_create([MemoryTally(day=day, shard=shard)], ignore_conflicts=True)
        cursor.execute(sql, params)


def tally_counts() -> dict[str, int]:
    """{memories, memoriesToday, embeddings} from the tally: two small aggregates."""
    total = MemoryTally.objects.aggregate(**{name: Sum(name) for name in FIELDS})
    day = MemoryTally.objects.filter(day=today()).aggregate(
        created=Sum("created"), deleted_same_day=Sum("deleted_same_day")
    )
    value = {key: int(v or 0) for key, v in total.items()}
    return {
        "memories": value["created"] - value["deleted"],
        "memoriesToday": int(day["created"] or 0) - int(day["deleted_same_day"] or 0),
        "embeddings": value["embeddings_added"] - value["embeddings_removed"],
    }


def tally_rebuild() -> dict[str, int]:
    """Recount from the tables (after a bulk import or hard deletes): today's row holds today's
    memories, yesterday's holds everything older; returns the new counts."""
    start = day_start(today())
    live = Memory.objects.filter(deleted_at__isnull=True)
    with transaction.atomic():
        MemoryTally.objects.all().delete()
        created_today = Memory.objects.filter(created_at__gte=start).count()
        deleted_today = Memory.objects.filter(
            created_at__gte=start, deleted_at__isnull=False
        ).count()
        older = Memory.objects.filter(created_at__lt=start).count()
        deleted_older = Memory.objects.filter(
            created_at__lt=start, deleted_at__isnull=False
        ).count()
        embeddings = Embedding.objects.filter(memory__in=live).count()
        MemoryTally.objects.bulk_create(
            [
                MemoryTally(
                    day=today(),
                    shard=0,
                    created=created_today,
                    deleted=deleted_today,
                    deleted_same_day=deleted_today,
                    embeddings_added=embeddings,
                ),
                MemoryTally(
                    day=today() - dt.timedelta(days=1),
                    shard=0,
                    created=older,
                    deleted=deleted_older,
                ),
            ]  # fmt: skip
        )
    return tally_counts()
