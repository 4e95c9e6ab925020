"""Enrichment jobs — the truth about what is waiting, running and done —, worker heartbeats, and
the Batch API's batches and their items."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from costs.money import ZERO, CentsField


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    DEFERRED = "deferred", "Deferred"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.DEFERRED)


class EnrichmentJob(models.Model):
    memory = models.ForeignKey(
        "memories.Memory", on_delete=models.CASCADE, related_name="enrichment_jobs"
    )
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    # SHA-256 of the text this job enriches: results for older text are never written.
    text_hash = models.CharField(max_length=64)
    attempts = models.PositiveSmallIntegerField(default=0)
    not_before = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    deferred_reason = models.CharField(max_length=64, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")
    # Results of finished steps, so a re-run after a crash does not pay for them again.
    classification = models.JSONField(null=True, blank=True)
    # The user's daily enrichment count already holds this job (counted at its first call).
    usage_counted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweep: due jobs per status, oldest first.
            models.Index(
                fields=["status", "not_before", "id"],
                name="job_due",
                condition=Q(status__in=["pending", "deferred", "processing"]),
            ),
            models.Index(fields=["status", "finished_at"], name="job_finished"),
        ]
        constraints = [
            # At most one run of a memory in flight: rapid edits coalesce behind it.
            models.UniqueConstraint(
                fields=["memory"],
                condition=Q(status="processing"),
                name="job_one_run_per_memory",
            )
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status}) for memory {self.memory_id}"


class WorkerHeartbeat(models.Model):
    """Written every few seconds by each live worker process."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.hostname


# --- the Batch API (enrichment.batch_api) -------------------------------------------------------


class BatchStatus(models.TextChoices):
    # Items and their budget holds are written; the input file and the batch are being sent.
    SUBMITTING = "submitting", "Submitting"
    # The provider has it (validating, in_progress, finalizing): polled until it ends.
    OPEN = "open", "Open"
    # The provider ended it: its results are being applied and settled, item by item.
    FINISHING = "finishing", "Finishing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


BATCH_UNFINISHED = (BatchStatus.SUBMITTING, BatchStatus.OPEN, BatchStatus.FINISHING)


class AIBatch(models.Model):
    """One request to OpenAI's Batch API (half price, results within 24 h): embeddings for many
    memories, each an AIBatchItem holding its own budget reservation until the batch ends."""

    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.SUBMITTING, db_index=True
    )
    purpose = models.CharField(max_length=32, default="reembed")
    operation = models.CharField(max_length=32, default="embedding")
    provider = models.CharField(max_length=32, default="openai")
    model = models.CharField(max_length=100)
    dimensions = models.PositiveIntegerField(null=True, blank=True)
    provider_batch_id = models.CharField(max_length=100, blank=True, default="", db_index=True)
    provider_status = models.CharField(max_length=32, blank=True, default="")
    input_file_id = models.CharField(max_length=100, blank=True, default="")
    output_file_id = models.CharField(max_length=100, blank=True, default="")
    error_file_id = models.CharField(max_length=100, blank=True, default="")
    item_count = models.PositiveIntegerField(default=0)
    # The provider's request counts, as last polled.
    requests_completed = models.PositiveIntegerField(default=0)
    requests_failed = models.PositiveIntegerField(default=0)
    # What the items' holds reserved at the batch prices (the estimate shown while it is open).
    estimate_cents = CentsField(db_column="estimate_microcents", default=ZERO)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "AI batch"
        verbose_name_plural = "AI batches"
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "-finished_at"], name="ai_batch_finished")]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.status}, {self.item_count} items)"


class BatchItemState(models.TextChoices):
    # Sent in an open batch, its reservation held.
    PENDING = "pending", "Pending"
    # Answered; its embedding written and its cost settled.
    APPLIED = "applied", "Applied"
    # Answered and settled (it was billed), not applied: the memory was edited or deleted.
    STALE = "stale", "Settled, not applied (edited or deleted meanwhile)"
    # The provider refused this line: settled if it billed tokens, else released.
    FAILED = "failed", "Failed"
    # No answer (the batch failed, expired or was cancelled first): the hold given back.
    RELEASED = "released", "Released"
    # Never sent: the budget or the user's limits refused its hold.
    REFUSED = "refused", "Refused"


class AIBatchItem(models.Model):
    """One memory's line in an AIBatch: its custom_id is `item-<pk>`."""

    batch = models.ForeignKey(AIBatch, on_delete=models.CASCADE, related_name="items")
    # Plain columns: a memory purged meanwhile must not take its item (and hold) with it.
    memory_id = models.UUIDField(db_index=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    # SHA-256 of the text sent: an answer for older text is settled but never applied.
    text_hash = models.CharField(max_length=64)
    input_tokens = models.PositiveIntegerField(default=0, help_text="Estimated.")
    reservation_id = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(
        max_length=16, choices=BatchItemState.choices, default=BatchItemState.PENDING
    )
    error = models.CharField(max_length=300, blank=True, default="")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "AI batch item"
        indexes = [
            models.Index(fields=["batch", "state"], name="ai_batch_item_state"),
            # Memories in an open batch (embeddings_stale leaves them out).
            models.Index(
                fields=["memory_id"],
                name="ai_batch_item_pending",
                condition=Q(state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.custom_id} ({self.state}) for memory {self.memory_id}"

    @property
    def custom_id(self) -> str:
        return f"item-{self.pk}"
