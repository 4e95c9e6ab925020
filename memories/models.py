"""Memories, their embeddings, and the stored answers behind Idempotency-Key."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Q
from pgvector.django import VectorField


class MemoryType(models.TextChoices):
    NOTE = "note", "Note"
    IDEA = "idea", "Idea"
    TASK = "task", "Task"
    JOURNAL = "journal", "Journal entry"
    QUOTE = "quote", "Quote"
    LINK = "link", "Link"
    EVENT = "event", "Event"


class EnrichmentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    ENRICHED = "enriched", "Enriched"
    DEFERRED = "deferred", "Deferred"
    FAILED = "failed", "Failed"


class MemoryQuerySet(models.QuerySet):
    def alive(self) -> MemoryQuerySet:
        return self.filter(deleted_at__isnull=True)


class Memory(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memories"
    )
    text_content = models.TextField()
    type = models.CharField(max_length=16, choices=MemoryType.choices, default=MemoryType.NOTE)
    category = models.CharField(max_length=32, blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    enrichment_status = models.CharField(
        max_length=16, choices=EnrichmentStatus.choices, default=EnrichmentStatus.PENDING
    )
    enriched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Keyword search: kept by a database trigger from text_content, in the SEARCH_LANGUAGE
    # configuration and 'simple' (exact tokens such as INV-88231); see memories/search.py.
    search_vector = SearchVectorField(null=True, editable=False)

    objects = MemoryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "memories"
        indexes = [
            # The list endpoint: one user's live memories, newest first.
            models.Index(
                fields=["user", "-created_at", "-id"],
                name="memory_user_recent",
                condition=Q(deleted_at__isnull=True),
            ),
            GinIndex(fields=["search_vector"], name="memory_search_vector"),
        ]

    def __str__(self) -> str:
        return f"{self.text_content[:60]}"


class Embedding(models.Model):
    """One pgvector vector per memory, with the model and dimensions that made it.

    The column is `vector` without a fixed size, so rows of an old and a new model can live side
    by side while memories are re-embedded; each (model, dimensions) in use gets a partial HNSW
    index on `vector::vector(N)` (memories/search.py). `user` is the memory's owner, copied here
    so that a per-user nearest-neighbour scan filters on the indexed table itself."""

    memory = models.OneToOneField(Memory, on_delete=models.CASCADE, related_name="embedding")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    model = models.CharField(max_length=100)
    dimensions = models.PositiveIntegerField()
    vector = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "model", "dimensions"], name="embedding_user_model"),
            models.Index(fields=["model", "dimensions"], name="embedding_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.dimensions})"


class IdempotencyKey(models.Model):
    """The first answer to a request carrying `Idempotency-Key`, replayed for repeats."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        COMPLETED = "completed", "Completed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"


class MemoryTally(models.Model):
    """Running counts per budget day (and shard, so concurrent writers rarely share a row),
    written in the same transaction as the change they count: the staff stats sum a few rows
    instead of counting millions. `manage.py memory_tally_rebuild` recomputes them."""

    SHARDS = 16

    day = models.DateField()
    shard = models.PositiveSmallIntegerField()
    created = models.BigIntegerField(default=0)
    deleted = models.BigIntegerField(default=0)
    # Of `created`, how many were tombstoned on the same day (memoriesToday counts live ones).
    deleted_same_day = models.BigIntegerField(default=0)
    embeddings_added = models.BigIntegerField(default=0)
    embeddings_removed = models.BigIntegerField(default=0)

    class Meta:
        db_table = "memory_tally"
        constraints = [
            models.UniqueConstraint(fields=["day", "shard"], name="memory_tally_day_shard")
        ]

    def __str__(self) -> str:
        return f"{self.day}/{self.shard}"
