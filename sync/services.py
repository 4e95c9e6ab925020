"""Push (a device's changes, applied by WatermelonDB's rules in one transaction) and the
tombstone purge. Memories are written only through memories' own services, so a pushed create
or text change counts against the daily limit and queues enrichment exactly like the API."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from common.errors import ConflictError
from common.publish import publishes_batched
from memories.models import Memory, MemoryType
from memories.services import memory_create, memory_delete, memory_update

from .models import MemoryChange, SyncHorizon
from .records import TABLE, PushBatch, PushedRecord, PushInvalidError
from .selectors import sync_horizon_check


@dataclass
class PushOutcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


def _refuse_foreign(record_id: uuid.UUID) -> PushInvalidError:
    return PushInvalidError(
        f"{TABLE}.{record_id}.id: This id belongs to another record; create it with a new id.",
        details={f"{TABLE}.{record_id}.id": ["This id belongs to another record."]},
    )


def _unchanged(memory: Memory, record: PushedRecord) -> bool:
    fields = record.fields
    return (fields.text_content is None or fields.text_content == memory.text_content) and (
        fields.type is None or fields.type == memory.type
    )


def sync_push(*, user, batch: PushBatch, last_pulled_at: int) -> PushOutcome:
    """Apply a device's changes, all or nothing.

    - a record changed on the server at or after `last_pulled_at` (the pull cursor) is a
      conflict: nothing is applied and the 409 names every such id — unless the push would
      not change it (a retried push that already landed);
    - a created record that exists is updated; an updated record that does not exist is
      created; deleting a missing or already deleted record does nothing;
    - an edit of a record deleted on the server before the device's last pull is dropped
      and the deletion is announced again, so the device's next pull removes it."""
    sync_horizon_check(user=user, last_pulled_at=last_pulled_at)
    try:
        # The pushed memories' enrichment tasks go to the broker together after the commit.
        with publishes_batched():
            return _push_apply(user=user, batch=batch, last_pulled_at=last_pulled_at)
    except IntegrityError:
        # Only a concurrent push inserting one of our new ids can get here (ids are unique).
        raise ConflictError(
            "Another push is creating the same records; sync again.",
            details={"conflicts": {TABLE: []}},
            headers={"Retry-After": "1"},
        ) from None


@transaction.atomic
def _push_apply(*, user, batch: PushBatch, last_pulled_at: int) -> PushOutcome:
    ids = [record.id for record in batch.upserts] + batch.deletes
    # Lock the rows first, in one order: a concurrent writer of one of them has committed (and
    # numbered its change) before we read the change numbers below.
    rows = {
        memory.pk: memory
        for memory in Memory.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    }
    for record in batch.upserts:
        if record.id in rows and rows[record.id].user_id != user.pk:
            raise _refuse_foreign(record.id)
    rows = {pk: memory for pk, memory in rows.items() if memory.user_id == user.pk}
    changed = dict(
        MemoryChange.objects.filter(memory_id__in=list(rows)).values_list("memory_id", "seq")
    )

    def changed_since_pull(pk: uuid.UUID) -> bool:
        return changed.get(pk, 0) >= last_pulled_at

    conflicts: list[uuid.UUID] = []
    creates: list[PushedRecord] = []
    updates: list[tuple[Memory, PushedRecord]] = []
    deletes: list[Memory] = []
    reannounce: list[uuid.UUID] = []
    outcome = PushOutcome()
    for record in batch.upserts:
        memory = rows.get(record.id)
        if memory is None:
            creates.append(record)
        elif memory.deleted_at is not None:
            if changed_since_pull(record.id):
                conflicts.append(record.id)
            else:
                reannounce.append(record.id)
        elif _unchanged(memory, record):
            outcome.unchanged += 1
        elif changed_since_pull(record.id):
            conflicts.append(record.id)
        else:
            updates.append((memory, record))
    for pk in batch.deletes:
        memory = rows.get(pk)
        if memory is None or memory.deleted_at is not None:
            outcome.unchanged += 1
        elif changed_since_pull(pk):
            conflicts.append(pk)
        else:
            deletes.append(memory)
    if conflicts:
        names = sorted(str(pk) for pk in conflicts)
        raise ConflictError(
            f"{len(names)} record(s) changed on the server since your last pull "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); pull, then push again.",
            details={"conflicts": {TABLE: names}},
        )

    for record in creates:
        if record.fields.text_content is None:
            raise PushInvalidError(
                f"{TABLE}.{record.id}.text_content: This field is required.",
                details={f"{TABLE}.{record.id}.text_content": ["This field is required."]},
            )
        memory_create(
            user=user,
            text_content=record.fields.text_content,
            type=record.fields.type or MemoryType.NOTE,
            memory_id=record.id,
        )
        outcome.created += 1
    for memory, record in updates:
        memory_update(
            memory=memory, text_content=record.fields.text_content, type=record.fields.type
        )
        outcome.updated += 1
    for memory in deletes:
        memory_delete(memory=memory)
        outcome.deleted += 1
    if reannounce:
        # Touch the tombstones: their change is numbered again and reaches the device.
        Memory.objects.filter(pk__in=reannounce).update(deleted_at=F("deleted_at"))
        outcome.unchanged += len(reannounce)
    return outcome


def sync_tombstones_purge(*, now: dt.datetime | None = None, batch_size: int = 500) -> int:
    """Delete tombstones older than SYNC_TOMBSTONE_DAYS for good; returns how many.

    Devices whose cursor predates a purged tombstone are sent 410 (resync) by the horizon,
    which moves past the purged changes in the same transaction."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.SYNC_TOMBSTONE_DAYS)
    purged = 0
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                # A purge is not a change for devices: the trigger leaves it untracked.
                cursor.execute("SET LOCAL sync.skip_tracking = 'on'")
            victims = list(
                Memory.objects.select_for_update(skip_locked=True)
                .filter(deleted_at__lt=cutoff)
                .values_list("pk", flat=True)[:batch_size]
            )
            if not victims:
                return purged
            floors: dict[int, int] = {}
            for user_id, seq in MemoryChange.objects.filter(memory_id__in=victims).values_list(
                "user_id", "seq"
            ):
                floors[user_id] = max(floors.get(user_id, 0), seq + 1)
            for user_id, floor in floors.items():
                SyncHorizon.objects.get_or_create(user_id=user_id)
                SyncHorizon.objects.filter(user_id=user_id).update(
                    purged_below=Greatest(F("purged_below"), floor)
                )
            MemoryChange.objects.filter(memory_id__in=victims).delete()
            Memory.objects.filter(pk__in=victims).delete()
            purged += len(victims)
