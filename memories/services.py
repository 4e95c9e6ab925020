"""Memory writes. Every change to a memory's text puts it back to `pending` and announces it
with `memory_text_changed` inside the same transaction, so enrichment (which this app never
imports) records its job atomically with the memory and dispatches it on commit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from common.clock import day_start, today
from costs.usage import usage_record_memory_created

from .models import Embedding, EnrichmentStatus, Memory
from .tally import tally_add, tally_add_many

# Sent inside the writing transaction with `memory` (and `created`, True for a new memory)
# whenever a memory's text is new or changed. Receivers write in the same transaction and
# defer side effects to on_commit.
memory_text_changed = Signal()


def _announce(memory: Memory, *, created: bool = False) -> None:
    memory_text_changed.send(sender=Memory, memory=memory, created=created)


@transaction.atomic(savepoint=False)
def memory_create(
    *,
    user,
    text_content: str,
    type: str,  # noqa: A002
    memory_id: uuid.UUID | None = None,
) -> Memory:
    """`memory_id`: a client-chosen id (offline sync); a new UUID when absent.

    Its own transaction, or part of the caller's (no savepoint: a create that fails fails the
    caller's transaction with it): the usage count, the memory, the tally and, through
    `memory_text_changed`, the enrichment job are written together; the job's task is sent on
    commit."""
    # Counts today's memory or raises LimitExceededError (429); rolled back with a failed create.
    # Lock order for every writer: the user's usage row first, then the memory tally.
    usage_record_memory_created(user=user)
    fields = {"id": memory_id} if memory_id is not None else {}
    memory = Memory.objects.create(user=user, text_content=text_content, type=type, **fields)
    tally_add(user_id=user.pk, created=1)
    _announce(memory, created=True)
    return memory


@transaction.atomic
def memory_update(*, memory: Memory, text_content: str | None = None, type: str | None = None):  # noqa: A002
    fields = ["updated_at"]
    if type is not None and type != memory.type:
        memory.type = type
        fields.append("type")
    text_changed = text_content is not None and text_content != memory.text_content
    if text_changed:
        memory.text_content = text_content
        memory.enrichment_status = EnrichmentStatus.PENDING
        memory.enriched_at = None
        fields += ["text_content", "enrichment_status", "enriched_at"]
    if len(fields) > 1:
        memory.save(update_fields=fields)
    if text_changed:
        _announce(memory)
    return memory


@transaction.atomic
def memory_delete(*, memory: Memory) -> None:
    """Tombstone the memory: hidden from the API at once, its row kept."""
    now = timezone.now()
    if Memory.objects.filter(pk=memory.pk, deleted_at__isnull=True).update(
        deleted_at=now, updated_at=now
    ):
        tally_add(
            user_id=memory.user_id,
            deleted=1,
            deleted_same_day=int(memory.created_at >= day_start(today())),
            embeddings_removed=int(Embedding.objects.filter(memory_id=memory.pk).exists()),
        )


def memory_enrichment_status_set(*, memory_id, status: str) -> bool:
    """Show where a live memory's enrichment stands (pending, processing, deferred, failed)."""
    return bool(memories_enrichment_status_set(memory_ids=[memory_id], status=status))


def memories_enrichment_status_set(*, memory_ids, status: str) -> int:
    """`memory_enrichment_status_set` for many memories, in one statement."""
    if not memory_ids:
        return 0
    return Memory.objects.filter(pk__in=memory_ids, deleted_at__isnull=True).update(
        enrichment_status=status
    )


@dataclass(frozen=True)
class EnrichmentResult:
    memory_id: uuid.UUID
    text_hash: str  # of the text that was enriched
    category: str
    tags: list[str]
    embedding: object  # model, dimensions, vector


def memories_enrichment_apply(
    *,
    results: list[EnrichmentResult],
    text_hash: Callable[[str], str],
    confirm: Callable[[set], set],
) -> dict:
    """Write finished enrichments in one transaction, each only if its memory is alive, its
    text is still the text that was enriched (`text_hash(text) == result.text_hash`), and
    `confirm(memory ids)` — the caller's own write, e.g. its jobs' completion — confirms it.
    Returns each memory's outcome: "enriched", "deleted", "superseded" or "unconfirmed".

    Lock order for every writer of enrichment results: the memory rows (in id order), then
    the tally rows (in shard order); memory_create takes the usage row, then the tally, and
    never the memory row of another transaction, so the two cannot deadlock."""
    outcomes: dict = {}
    with transaction.atomic():
        locked = {
            memory.pk: memory
            for memory in Memory.objects.select_for_update()
            .filter(pk__in=[r.memory_id for r in results])
            .order_by("pk")
            .only("pk", "user_id", "text_content", "deleted_at")
        }
        candidates = []
        for result in results:
            memory = locked.get(result.memory_id)
            if memory is None or memory.deleted_at is not None:
                outcomes[result.memory_id] = "deleted"
            elif text_hash(memory.text_content) != result.text_hash:
                outcomes[result.memory_id] = "superseded"
            else:
                candidates.append(result)
        confirmed = confirm({r.memory_id for r in candidates}) if candidates else set()
        for result in candidates:
            if result.memory_id not in confirmed:
                outcomes[result.memory_id] = "unconfirmed"
        done = [r for r in candidates if r.memory_id in confirmed]
        if not done:
            return outcomes
        now = timezone.now()
        memories = [
            Memory(
                pk=r.memory_id, category=r.category, tags=r.tags, updated_at=now,
                enrichment_status=EnrichmentStatus.ENRICHED, enriched_at=now,
            )
            for r in done
        ]  # fmt: skip
        Memory.objects.bulk_update(
            memories, ["category", "tags", "enrichment_status", "enriched_at", "updated_at"]
        )
        embeddings_save([(r.memory_id, locked[r.memory_id].user_id, r.embedding) for r in done])
        for result in done:
            outcomes[result.memory_id] = "enriched"
    return outcomes


def memories_embedding_refresh(*, refreshes: list[tuple]) -> set:
    """Replace memories' embeddings (another model's): each (memory id, text_is, embedding) is
    stored only if the memory is alive and `text_is(its text)` (the text that was embedded).
    One transaction (the caller's, if any); the memory rows are locked first, in id order, as
    `memories_enrichment_apply` locks them. Returns the ids stored."""
    if not refreshes:
        return set()
    with transaction.atomic():
        locked = {
            memory.pk: memory
            for memory in Memory.objects.select_for_update()
            .filter(pk__in=[memory_id for memory_id, _, _ in refreshes], deleted_at__isnull=True)
            .order_by("pk")
            .only("pk", "user_id", "text_content")
        }
        kept = [
            (memory_id, locked[memory_id].user_id, embedding)
            for memory_id, text_is, embedding in refreshes
            if memory_id in locked and text_is(locked[memory_id].text_content)
        ]
        embeddings_save(kept)
    return {memory_id for memory_id, _, _ in kept}


def embeddings_save(embeddings: list[tuple]) -> None:
    """Store (or replace) memories' embeddings, each (memory id, user id, embedding), in two
    statements and one tally update per shard; call inside the transaction that writes the
    memories' enrichment, after locking the memory rows."""
    if not embeddings:
        return
    ids = [memory_id for memory_id, _, _ in embeddings]
    known = set(Embedding.objects.filter(memory_id__in=ids).values_list("memory_id", flat=True))
    Embedding.objects.bulk_create(
        [
            Embedding(
                memory_id=memory_id, user_id=user_id, model=embedding.model,
                dimensions=embedding.dimensions, vector=embedding.vector,
            )
            for memory_id, user_id, embedding in embeddings
        ],
        update_conflicts=True,
        unique_fields=["memory"],
        update_fields=["user", "model", "dimensions", "vector"],
    )  # fmt: skip
    added: dict[int, int] = {}
    for memory_id, user_id, _ in embeddings:
        if memory_id not in known:
            added[user_id] = added.get(user_id, 0) + 1
    tally_add_many(added, field="embeddings_added")


def embedding_save(*, memory_id, model: str, dimensions: int, vector: list[float]) -> None:
    """Store (or replace) one memory's embedding: `embeddings_save` of one (seeding, tests)."""
    user_id = Memory.objects.filter(pk=memory_id).values_list("user_id", flat=True).get()
    embedding = SimpleNamespace(model=model, dimensions=dimensions, vector=vector)
    embeddings_save([(memory_id, user_id, embedding)])
