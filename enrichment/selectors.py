"""Read queries about the pipeline, shared by the admin API, the admin and the dashboard."""

from __future__ import annotations

import datetime as dt
import re

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from common.clock import day_start, today
from costs.models import AICostRecord, BudgetReservation
from costs.money import ZERO
from costs.pricing import DATED_SNAPSHOT
from memories.models import Embedding, Memory

from .models import (
    ACTIVE_STATUSES,
    BATCH_UNFINISHED,
    AIBatch,
    AIBatchItem,
    BatchItemState,
    EnrichmentJob,
    JobStatus,
    WorkerHeartbeat,
)
from .providers import active_embedding
from .services import WAITING_STATUSES


def worker_alive_window_seconds() -> int:
    """THE worker-alive rule: a worker is alive while its last heartbeat is newer than this."""
    return 3 * settings.ENRICHMENT_HEARTBEAT_SECONDS


def heartbeat_cutoff(now: dt.datetime | None = None) -> dt.datetime:
    """A worker seen after this is alive."""
    now = now or timezone.now()
    return now - dt.timedelta(seconds=worker_alive_window_seconds())


def workers_live(*, now: dt.datetime | None = None) -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is within the alive window."""
    return list(
        WorkerHeartbeat.objects.filter(last_seen__gte=heartbeat_cutoff(now)).order_by("hostname")
    )


# The reason shown for a deferred job that has none recorded (rows written before reasons were).
UNSPECIFIED_REASON = "unspecified"


def queue_deferred_by_reason() -> dict[str, dict]:
    """Deferred jobs per reason ("budget_exhausted", "rate_limited", a user limit...), each with the
    earliest time one of them becomes due again: {reason: {"count": n, "until": datetime}}."""
    rows = (
        EnrichmentJob.objects.filter(status=JobStatus.DEFERRED)
        .values("deferred_reason")
        .annotate(count=Count("pk"), until=Min("not_before"))
        .order_by("deferred_reason")
    )
    return {
        row["deferred_reason"] or UNSPECIFIED_REASON: {"count": row["count"], "until": row["until"]}
        for row in rows
    }


def queue_counts() -> dict:
    """Jobs waiting and running now, and finished today (budget day).

    `pending` counts every job waiting, normal and deferred alike (the reference's contract: a
    memory queued while the breaker is open is pending); `deferred` and `deferredByReason` break
    the deferred ones down. One query, and one more only when some job is deferred."""
    since = day_start(today())
    # Only rows that can count (waiting, running, or finished today) — found through the
    # status/finished_at indexes, never a scan of the whole job history.
    relevant = EnrichmentJob.objects.filter(
        Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.DEFERRED])
        | Q(finished_at__gte=since)
    )
    counts = relevant.aggregate(
        pending=Count("pk", filter=Q(status__in=WAITING_STATUSES)),
        processing=Count("pk", filter=Q(status=JobStatus.PROCESSING)),
        deferred=Count("pk", filter=Q(status=JobStatus.DEFERRED)),
        completedToday=Count("pk", filter=Q(status=JobStatus.COMPLETED, finished_at__gte=since)),
        failedToday=Count("pk", filter=Q(status=JobStatus.FAILED, finished_at__gte=since)),
    )
    result: dict = {key: int(value or 0) for key, value in counts.items()}
    result["deferredByReason"] = queue_deferred_by_reason() if result["deferred"] else {}
    return result


def worker_jobs_done_today(hostnames: list[str]) -> dict[str, int]:
    """Jobs each worker completed today, in one query."""
    rows = (
        EnrichmentJob.objects.filter(
            worker__in=hostnames,
            status=JobStatus.COMPLETED,
            finished_at__gte=day_start(today()),
        )
        .values("worker")
        .annotate(done=Count("pk"))
    )
    return {row["worker"]: row["done"] for row in rows}


def embeddings_stale():
    """Live memories' embeddings made by another model (or at other dimensions) than the active
    provider's: re-embedded in the background after a model change. A dated snapshot of the
    active model (text-embedding-3-small-2025-01-01) counts as the active model."""
    model, dimensions = active_embedding()
    current = Q(model=model) | Q(model__regex=rf"^{re.escape(model)}{DATED_SNAPSHOT.pattern}")
    if dimensions:
        current &= Q(dimensions=dimensions)
    # A memory waiting in an open Batch API batch is paid for there: never twice.
    return (
        Embedding.objects.filter(memory__deleted_at__isnull=True)
        .exclude(current)
        .exclude(memory_id__in=memories_in_open_batches())
    )


def embeddings_stale_among(memory_ids) -> bool:
    """Whether any of these memories' embeddings is still of another model than the active one
    (just re-embedded: the provider answers another model or size than configured)."""
    return embeddings_stale().filter(memory_id__in=memory_ids).exists()


def memories_in_open_batches():
    """Ids of the memories whose embedding an open Batch API batch is making (a subquery)."""
    return AIBatchItem.objects.filter(state=BatchItemState.PENDING).values("memory_id")


def embeddings_batchable(*, purpose: str = "reembed"):
    """Live memories the Batch API may embed, oldest first: those embedded by another model
    (`reembed`), and for a `backfill` also those without an embedding and with no enrichment job
    waiting or running (the pipeline embeds those). None already in an open batch."""
    wanted = Q(pk__in=embeddings_stale().values("memory_id"))
    if purpose == "backfill":
        wanted |= Q(embedding__isnull=True) & ~Q(
            pk__in=EnrichmentJob.objects.filter(status__in=ACTIVE_STATUSES).values("memory_id")
        )
    return (
        Memory.objects.alive()
        .filter(wanted)
        .exclude(pk__in=memories_in_open_batches())
        .order_by("created_at", "pk")
    )


def reembedding_progress() -> dict:
    """`{pending, model, dimensions}`: embeddings still of another model, and the active one."""
    model, dimensions = active_embedding()
    return {"pending": embeddings_stale().count(), "model": model, "dimensions": dimensions}


def worker_status() -> dict:
    workers = workers_live()
    done = worker_jobs_done_today([w.hostname for w in workers]) if workers else {}
    return {
        "worker": {
            "isRunning": bool(workers),
            "enabled": settings.ENRICHMENT_WORKER_ENABLED,
            "pollIntervalMs": settings.ENRICHMENT_POLL_INTERVAL_MS,
            "provider": settings.AI_PROVIDER,
            "liveWorkers": [
                {
                    "hostname": w.hostname,
                    "pid": w.pid,
                    "startedAt": w.started_at,
                    "lastSeen": w.last_seen,
                    "jobsDone": done.get(w.hostname, 0),
                }
                for w in workers
            ],
        },
        "queue": queue_counts(),
        "reembedding": reembedding_progress(),
        "batchApi": batches_overview(),
        "timestamp": timezone.now(),
    }


def worker_last_heartbeat() -> dt.datetime | None:
    """The newest heartbeat of any worker, live or not; None when no worker ever beat. One query."""
    return (
        WorkerHeartbeat.objects.order_by("-last_seen").values_list("last_seen", flat=True).first()
    )


# --- the Batch API ------------------------------------------------------------------------------

RECENT_BATCHES_SHOWN = 5


def _batch_row(batch: AIBatch) -> dict:
    return {
        "id": batch.pk,
        "providerBatchId": batch.provider_batch_id,
        "status": batch.status,
        "providerStatus": batch.provider_status,
        "purpose": batch.purpose,
        "model": batch.model,
        "items": batch.item_count,
        "requestsCompleted": batch.requests_completed,
        "requestsFailed": batch.requests_failed,
        "estimateCents": batch.estimate_cents,
        "error": batch.error,
        "createdAt": batch.created_at,
        "submittedAt": batch.submitted_at,
        "expiresAt": batch.expires_at,
        "lastPolledAt": batch.last_polled_at,
        "finishedAt": batch.finished_at,
    }


def batches_open() -> list[AIBatch]:
    """Batches not yet finished (submitting, open at the provider, or being applied)."""
    return list(AIBatch.objects.filter(status__in=BATCH_UNFINISHED).order_by("id"))


def batches_overview() -> dict:
    """The Batch API at a glance (dashboard, staff API, `manage.py enrich --batch-api --status`):
    unfinished batches with the budget their items hold, and the last few finished ones with
    their items per outcome and what they cost at the batch prices. A few small queries."""
    unfinished = batches_open()
    recent = list(
        AIBatch.objects.exclude(status__in=BATCH_UNFINISHED).order_by("-finished_at", "-id")[
            :RECENT_BATCHES_SHOWN
        ]
    )
    ids = [batch.pk for batch in recent]
    outcomes: dict[int, dict[str, int]] = {}
    for row in (
        AIBatchItem.objects.filter(batch_id__in=ids)
        .values("batch_id", "state")
        .annotate(count=Count("pk"))
    ):
        outcomes.setdefault(row["batch_id"], {})[row["state"]] = row["count"]
    # What each recent batch cost: its items' ledger rows (two queries, whatever the number).
    batch_of = dict(
        AIBatchItem.objects.filter(batch_id__in=ids, reservation_id__isnull=False).values_list(
            "reservation_id", "batch_id"
        )
    )
    costs = dict.fromkeys(ids, ZERO)
    for reservation_id, cost in AICostRecord.objects.filter(
        reservation_id__in=list(batch_of)
    ).values_list("reservation_id", "cost_cents"):
        costs[batch_of[reservation_id]] += cost
    # What the budget still holds for the Batch API (not the estimates taken at submit: part of
    # a finishing batch may be settled already), and the memories still waiting.
    held = BudgetReservation.objects.filter(
        state=BudgetReservation.State.ACTIVE, batch_api=True
    ).aggregate(total=Sum("amount_cents"))["total"]
    return {
        "open": [_batch_row(batch) for batch in unfinished],
        "openItems": memories_in_open_batches().count(),
        "heldCents": held or ZERO,
        "recent": [
            {
                **_batch_row(batch),
                "outcomes": outcomes.get(batch.pk, {}),
                "costCents": costs[batch.pk],
            }
            for batch in recent
        ],
        "pollSeconds": settings.OPENAI_BATCH_POLL_SECONDS,
        "reembedByBatch": settings.OPENAI_BATCH_REEMBED,
    }
