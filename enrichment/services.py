"""Enrichment use cases: jobs are created with their memory, dispatched on commit, claimed by
compare-and-set, metered against the budget, and finished exactly once.

Every step is safe to run twice: a duplicate delivery finds nothing to claim, a crashed run's
lease expires and the sweep hands the job out again, and a finished classification is kept on
the job so a re-run does not pay for it twice."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import random
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from common.clock import next_reset
from costs import services as costs
from memories.models import EnrichmentStatus, Memory
from memories.services import embedding_save

from .models import ACTIVE_STATUSES, EnrichmentJob, JobQueue, JobStatus, WorkerHeartbeat
from .providers import Provider, ProviderError, get_provider

WAITING_STATUSES = (JobStatus.PENDING, JobStatus.DEFERRED)

logger = logging.getLogger(__name__)

PROCESS_TASK = "enrichment.process_job"


class Queue:
    """Broker queue names, in one place."""

    ENRICHMENT = "enrichment"
    MAINTENANCE = "maintenance"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- creation and dispatch ----------------------------------------------------------------------


def job_create_for_memory(*, memory: Memory, created: bool = False) -> EnrichmentJob:
    """A pending job for the memory's current text, in the caller's transaction; dispatched on
    commit. Jobs still waiting for older text are cancelled (a memory just `created` has none):
    only the newest text is enriched."""
    now = timezone.now()
    if not created:
        EnrichmentJob.objects.filter(memory=memory, status__in=WAITING_STATUSES).update(
            status=JobStatus.CANCELLED, finished_at=now, last_error="superseded by newer text"
        )
    job = EnrichmentJob.objects.create(
        memory=memory, text_hash=text_hash(memory.text_content), dispatched_at=now
    )
    transaction.on_commit(lambda: job_dispatch(job_id=job.pk), robust=True)
    return job


def job_dispatch(*, job_id: int) -> bool:
    """Send the job's task. If the broker is unreachable the job stays pending and the sweep
    sends it later; the caller (an API request) never fails because of the broker."""
    try:
        current_app.send_task(PROCESS_TASK, args=[job_id], queue=Queue.ENRICHMENT)
    except Exception as exc:  # noqa: BLE001 - any broker failure means "the sweep will do it"
        logger.warning(
            "broker unreachable, job %s left for the sweep: %s", job_id, type(exc).__name__
        )
        EnrichmentJob.objects.filter(pk=job_id).update(dispatched_at=None)
        return False
    return True


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    dispatched: int
    requeued: int
    failed: int
    reservations_released: int


def _fail_memory(memory_id) -> None:
    Memory.objects.filter(pk=memory_id).update(enrichment_status=EnrichmentStatus.FAILED)


def jobs_requeue_expired(*, now: dt.datetime) -> tuple[int, int]:
    """Jobs whose worker died mid-run: hand them out again, or fail those out of attempts."""
    requeued = failed = 0
    expired = EnrichmentJob.objects.filter(
        status=JobStatus.PROCESSING, lease_expires_at__lt=now
    ).values_list("pk", "attempts", "lease_expires_at", "memory_id")
    for pk, attempts, lease, memory_id in expired[:1000]:
        same = EnrichmentJob.objects.filter(
            pk=pk, status=JobStatus.PROCESSING, lease_expires_at=lease
        )
        if attempts >= settings.ENRICHMENT_MAX_ATTEMPTS:
            if same.update(
                status=JobStatus.FAILED,
                finished_at=now,
                lease_expires_at=None,
                last_error="worker lost: lease expired after the last attempt",
            ):
                _fail_memory(memory_id)
                failed += 1
        elif same.update(
            status=JobStatus.PENDING,
            lease_expires_at=None,
            dispatched_at=None,
            not_before=None,
            last_error="worker lost: lease expired",
        ):
            requeued += 1
    if requeued or failed:
        logger.warning("sweep: %s expired leases re-queued, %s failed", requeued, failed)
    return requeued, failed


def jobs_due(*, now: dt.datetime, limit: int) -> list[tuple[int, str, dt.datetime | None]]:
    """Up to `limit` jobs to send: the normal queue first, then deferred ones now due."""
    redispatch_before = now - dt.timedelta(seconds=settings.ENRICHMENT_REDISPATCH_SECONDS)
    not_in_flight = Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=redispatch_before)
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    fields = ("pk", "status", "dispatched_at")
    normal = list(
        EnrichmentJob.objects.filter(Q(status=JobStatus.PENDING) & due & not_in_flight)
        .order_by("id")
        .values_list(*fields)[:limit]
    )
    if len(normal) >= limit:
        return normal
    deferred = list(
        EnrichmentJob.objects.filter(
            Q(status=JobStatus.DEFERRED) & Q(not_before__lte=now) & not_in_flight
        )
        .order_by("not_before", "id")
        .values_list(*fields)[: limit - len(normal)]
    )
    return normal + deferred


def jobs_sweep(*, now: dt.datetime | None = None, limit: int | None = None) -> SweepResult:
    """One cycle of the beat sweep (also `trigger` and `manage.py enrich`)."""
    now = now or timezone.now()
    released = costs.budget_reservations_expire(now=now)
    requeued, failed = jobs_requeue_expired(now=now)
    dispatched = 0
    if settings.ENRICHMENT_WORKER_ENABLED:
        for pk, status, dispatched_at in jobs_due(
            now=now, limit=limit or settings.ENRICHMENT_BATCH_SIZE
        ):
            # Compare-and-set, so two sweeps running at once send each job once.
            if EnrichmentJob.objects.filter(
                pk=pk, status=status, dispatched_at=dispatched_at
            ).update(dispatched_at=now):
                dispatched += job_dispatch(job_id=pk)
    return SweepResult(dispatched, requeued, failed, released)


# --- processing one job -------------------------------------------------------------------------


def _claim(*, job_id: int, worker: str) -> bool:
    now = timezone.now()
    return bool(
        EnrichmentJob.objects.filter(
            Q(pk=job_id),
            Q(status__in=WAITING_STATUSES),
            Q(not_before__isnull=True) | Q(not_before__lte=now),
        ).update(
            status=JobStatus.PROCESSING,
            attempts=F("attempts") + 1,
            lease_expires_at=now + dt.timedelta(seconds=settings.ENRICHMENT_LEASE_SECONDS),
            started_at=now,
            worker=worker[:255],
            deferred_reason="",
        )
    )


def _ours(job: EnrichmentJob):
    """The job row, only while this run still holds its claim."""
    return EnrichmentJob.objects.filter(
        pk=job.pk, status=JobStatus.PROCESSING, attempts=job.attempts
    )


def _finish(job: EnrichmentJob, status: str, error: str = "") -> bool:
    return bool(
        _ours(job).update(
            status=status, finished_at=timezone.now(), lease_expires_at=None, last_error=error
        )
    )


def _defer(job: EnrichmentJob, *, until: dt.datetime, reason: str) -> None:
    # Not an attempt: no AI call was made.
    if _ours(job).update(
        status=JobStatus.DEFERRED,
        queue=JobQueue.DEFERRED,
        not_before=until,
        deferred_reason=reason,
        dispatched_at=None,
        lease_expires_at=None,
        attempts=F("attempts") - 1,
    ):
        Memory.objects.filter(pk=job.memory_id, deleted_at__isnull=True).update(
            enrichment_status=EnrichmentStatus.DEFERRED
        )
        logger.info("job %s deferred until %s: %s", job.pk, until.isoformat(), reason)


def retry_delay(*, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(
        settings.ENRICHMENT_RETRY_MAX_SECONDS,
        settings.ENRICHMENT_RETRY_BASE_SECONDS * (2 ** max(0, attempts - 1)),
    )
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


def _retry_or_fail(job: EnrichmentJob, error: ProviderError) -> str:
    message = str(error)[:2000]
    if error.retryable and job.attempts < settings.ENRICHMENT_MAX_ATTEMPTS:
        delay = retry_delay(attempts=job.attempts, retry_after=error.retry_after)
        _ours(job).update(
            status=JobStatus.PENDING,
            not_before=timezone.now() + dt.timedelta(seconds=delay),
            dispatched_at=None,
            lease_expires_at=None,
            last_error=message,
        )
        Memory.objects.filter(pk=job.memory_id, deleted_at__isnull=True).update(
            enrichment_status=EnrichmentStatus.PENDING
        )
        logger.warning("job %s: %s; retry %s in %.1fs", job.pk, message, job.attempts, delay)
        return "retrying"
    if _finish(job, JobStatus.FAILED, message):
        _fail_memory(job.memory_id)
    logger.error("job %s failed after %s attempts: %s", job.pk, job.attempts, message)
    return "failed"


class _BudgetRefused(Exception):
    pass


def _metered_call(*, job, memory, provider: Provider, operation: str, model: str, estimate, call):
    """Reserve the estimate, call, settle the real cost (also for a billed malformed answer)."""
    estimate_cents = costs.cost_compute(
        provider=provider.name,
        model=model,
        input_tokens=estimate.input_tokens,
        output_tokens=estimate.output_tokens,
    )
    reservation = costs.budget_reserve(
        estimate_cents=estimate_cents, user=memory.user, memory=memory
    )
    if reservation is None:
        raise _BudgetRefused
    try:
        result = call()
    except ProviderError as exc:
        usage = getattr(exc, "usage", None)
        if usage is not None:
            costs.budget_settle(
                reservation=reservation, user=memory.user, memory=memory, operation=operation,
                provider=provider.name, model=model, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
            )  # fmt: skip
        else:
            costs.budget_release(reservation=reservation)
        raise
    except BaseException:
        costs.budget_release(reservation=reservation)
        raise
    costs.budget_settle(
        reservation=reservation, user=memory.user, memory=memory, operation=operation,
        provider=provider.name, model=result.model, input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens, cached_tokens=result.usage.cached_tokens,
    )  # fmt: skip
    return result


def job_process(*, job_id: int, worker: str = "", provider: Provider | None = None) -> str:
    """Run one job end to end; returns what happened (for logs, tests and the command)."""
    if not settings.ENRICHMENT_WORKER_ENABLED:
        # Leave it pending and let the sweep send it again once processing is enabled.
        EnrichmentJob.objects.filter(pk=job_id, status__in=WAITING_STATUSES).update(
            dispatched_at=None
        )
        return "disabled"
    if not _claim(job_id=job_id, worker=worker or f"pid-{os.getpid()}"):
        return "not_claimed"
    job = EnrichmentJob.objects.select_related("memory", "memory__user").get(pk=job_id)
    memory = job.memory
    if memory.deleted_at is not None:
        _finish(job, JobStatus.CANCELLED, "memory deleted")
        return "cancelled"
    if text_hash(memory.text_content) != job.text_hash:
        _finish(job, JobStatus.CANCELLED, "superseded by newer text")
        return "superseded"

    if costs.budget_breaker_state() == "open":
        _defer(job, until=next_reset(), reason="budget")
        return "deferred"
    refusal = costs.usage_check_enrichment(user=memory.user)
    if refusal:
        _defer(job, until=next_reset(), reason=refusal)
        return "deferred"
    if not costs.provider_breaker_allow():
        cooldown = dt.timedelta(seconds=settings.AI_PROVIDER_COOLDOWN_SECONDS)
        _defer(job, until=timezone.now() + cooldown, reason="provider_breaker")
        return "deferred"

    Memory.objects.filter(pk=memory.pk, deleted_at__isnull=True).update(
        enrichment_status=EnrichmentStatus.PROCESSING
    )
    provider = provider or get_provider()
    text = memory.text_content
    classification = job.classification
    called = False  # whether this run reached the provider (it judges a half-open probe)
    try:
        if classification is None:
            result = _metered_call(
                job=job, memory=memory, provider=provider, operation="classification",
                model=provider.classification_model,
                estimate=provider.estimate_classification_tokens(text),
                call=lambda: provider.classify(text),
            )  # fmt: skip
            called = True
            classification = {"category": result.category, "tags": result.tags}
            _ours(job).update(classification=classification)
        embedding = _metered_call(
            job=job, memory=memory, provider=provider, operation="embedding",
            model=provider.embedding_model,
            estimate=provider.estimate_embedding_tokens(text),
            call=lambda: provider.embed(text),
        )  # fmt: skip
    except _BudgetRefused:
        if called:
            costs.provider_breaker_record_success()
        else:
            costs.provider_breaker_release_probe()  # no call made: let another caller probe
        if costs.budget_breaker_state() == "open":
            _defer(job, until=next_reset(), reason="budget")
        else:
            # Under the limit, but calls in flight hold the rest: they may settle for less.
            retry_at = timezone.now() + dt.timedelta(
                seconds=settings.ENRICHMENT_BUDGET_RETRY_SECONDS
            )
            _defer(job, until=min(retry_at, next_reset()), reason="budget_reserved")
        return "deferred"
    except ProviderError as error:
        costs.provider_breaker_record_failure()
        return _retry_or_fail(job, error)
    costs.provider_breaker_record_success()
    return _complete(job, memory, classification, embedding)


def _complete(job: EnrichmentJob, memory: Memory, classification: dict, embedding) -> str:
    with transaction.atomic():
        locked = Memory.objects.select_for_update().filter(pk=memory.pk).first()
        if locked is None or locked.deleted_at is not None:
            _finish(job, JobStatus.CANCELLED, "memory deleted")
            return "cancelled"
        if text_hash(locked.text_content) != job.text_hash:
            # The text changed while we worked: the newer job's result is the one to keep.
            _finish(job, JobStatus.CANCELLED, "superseded by newer text")
            return "superseded"
        if not _finish(job, JobStatus.COMPLETED):
            return "lost_claim"  # our lease expired and another run owns the job now
        now = timezone.now()
        Memory.objects.filter(pk=memory.pk).update(
            category=classification["category"],
            tags=classification["tags"],
            enrichment_status=EnrichmentStatus.ENRICHED,
            enriched_at=now,
            updated_at=now,
        )
        # Lock order, as in memory_create: the user's usage row, then the memory tally.
        costs.usage_record_enrichment(user=memory.user)
        embedding_save(
            memory_id=memory.pk,
            model=embedding.model,
            dimensions=embedding.dimensions,
            vector=embedding.vector,
        )
    return "completed"


# --- staff actions ------------------------------------------------------------------------------


def jobs_retry(*, queryset) -> int:
    """Put failed (or cancelled) jobs back in the queue, attempts reset; returns how many."""
    ids = list(
        queryset.filter(status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).values_list(
            "pk", flat=True
        )
    )
    retried = 0
    for job in EnrichmentJob.objects.filter(pk__in=ids).select_related("memory"):
        if job.memory.deleted_at is not None:
            continue
        with transaction.atomic():
            memory = Memory.objects.select_for_update().get(pk=job.memory_id)
            if EnrichmentJob.objects.filter(
                memory_id=memory.pk, status__in=ACTIVE_STATUSES
            ).exists():
                continue  # it is already queued again
            job_create_for_memory(memory=memory)
            Memory.objects.filter(pk=memory.pk).update(enrichment_status=EnrichmentStatus.PENDING)
            retried += 1
    return retried


def jobs_cancel(*, queryset) -> int:
    now = timezone.now()
    return queryset.filter(status__in=WAITING_STATUSES).update(
        status=JobStatus.CANCELLED, finished_at=now, last_error="cancelled by staff"
    )


def memories_enrich_again(*, memories) -> int:
    """Queue a fresh job for each live memory without one already waiting."""
    queued = 0
    for memory_id in memories.filter(deleted_at__isnull=True).values_list("pk", flat=True):
        with transaction.atomic():
            memory = Memory.objects.select_for_update().get(pk=memory_id)
            if EnrichmentJob.objects.filter(memory=memory, status__in=ACTIVE_STATUSES).exists():
                continue
            job_create_for_memory(memory=memory)
            Memory.objects.filter(pk=memory.pk).update(enrichment_status=EnrichmentStatus.PENDING)
            queued += 1
    return queued


# --- worker heartbeats ---------------------------------------------------------------------------


def heartbeat_beat(*, hostname: str, pid: int, started_at: dt.datetime) -> None:
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(hostname=hostname).update(
        last_seen=now, pid=pid, started_at=started_at
    )
    if not updated:
        WorkerHeartbeat.objects.update_or_create(
            hostname=hostname, defaults={"pid": pid, "started_at": started_at, "last_seen": now}
        )


def heartbeat_stop(*, hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()
