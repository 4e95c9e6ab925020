"""Enrichment jobs — the truth about what is waiting, running and done — and worker heartbeats."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


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
