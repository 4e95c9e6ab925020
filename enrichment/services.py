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
import time
from collections.abc import Callable
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.metrics import ENRICHMENT_JOB_DURATION, ENRICHMENT_RETRIES
from costs import budget, metering
from memories.models import EnrichmentStatus, Memory
from memories.services import (
    memory_embedding_refresh,
    memory_enrichment_apply,
    memory_enrichment_status_set,
)

from .models import ACTIVE_STATUSES, EnrichmentJob, JobStatus, WorkerHeartbeat
from .providers import Provider, ProviderError, get_provider
from .providers.metered import metered_call

WAITING_STATUSES = (JobStatus.PENDING, JobStatus.DEFERRED)

logger = logging.getLogger(__name__)

PROCESS_TASK = "enrichment.process_job"
# Deferral reasons: the metering door's refusals (costs.budget.Refusal), and this one.
RATE_LIMITED = "rate_limited"
# A job due within this many seconds is sent with a countdown instead of waiting for a sweep.
SOON_SECONDS = 60


class Queue:
    """Broker queue names, in one place."""

    ENRICHMENT = "enrichment"


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


def job_dispatch(*, job_id: int, countdown: float | None = None) -> bool:
    """Send the job's task (after `countdown` seconds). If the broker is unreachable the job
    stays waiting and the sweep sends it later; the caller never fails because of the broker."""
    try:
        options = {"countdown": countdown} if countdown else {}
        current_app.send_task(PROCESS_TASK, args=[job_id], queue=Queue.ENRICHMENT, **options)
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
    reservations_expired: int


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
                memory_enrichment_status_set(memory_id=memory_id, status=EnrichmentStatus.FAILED)
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


def jobs_due(
    *, now: dt.datetime, limit: int, jobs=None
) -> list[tuple[int, str, dt.datetime | None]]:
    """Up to `limit` jobs to send (of `jobs`, default all): pending ones first, then deferred
    ones now due."""
    jobs = EnrichmentJob.objects.all() if jobs is None else jobs
    redispatch_before = now - dt.timedelta(seconds=settings.ENRICHMENT_REDISPATCH_SECONDS)
    not_in_flight = Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=redispatch_before)
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    fields = ("pk", "status", "dispatched_at")
    normal = list(
        jobs.filter(Q(status=JobStatus.PENDING) & due & not_in_flight)
        .order_by("id")
        .values_list(*fields)[:limit]
    )
    if len(normal) >= limit:
        return normal
    deferred = list(
        jobs.filter(Q(status=JobStatus.DEFERRED) & Q(not_before__lte=now) & not_in_flight)
        .order_by("not_before", "id")
        .values_list(*fields)[: limit - len(normal)]
    )
    return normal + deferred


def jobs_sweep(
    *, now: dt.datetime | None = None, limit: int | None = None, jobs=None
) -> SweepResult:
    """One cycle of the beat sweep (also `trigger` and `manage.py enrich`, which may narrow the
    dispatch to `jobs`)."""
    now = now or timezone.now()
    expired = budget.budget_reservations_expire(now=now)
    requeued, failed = jobs_requeue_expired(now=now)
    dispatched = 0
    if settings.ENRICHMENT_WORKER_ENABLED:
        for pk, status, dispatched_at in jobs_due(
            now=now, limit=limit or settings.ENRICHMENT_BATCH_SIZE, jobs=jobs
        ):
            # Compare-and-set, so two sweeps running at once send each job once.
            if EnrichmentJob.objects.filter(
                pk=pk, status=status, dispatched_at=dispatched_at
            ).update(dispatched_at=now):
                dispatched += job_dispatch(job_id=pk)
    result = SweepResult(dispatched, requeued, failed, expired)
    log = logger.info if dispatched or requeued or failed or expired else logger.debug
    log("sweep: %s", result)
    return result


# --- processing one job -------------------------------------------------------------------------


def _claim(*, job_id: int, worker: str) -> bool:
    """Compare-and-set the job to processing. At most one run per memory is in flight (a
    partial unique index): a job whose memory is being enriched by another run stays waiting,
    and that run dispatches it when it ends."""
    now = timezone.now()
    try:
        with transaction.atomic():
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
    except IntegrityError:
        logger.debug("job %s waits: another run of its memory is in flight", job_id)
        return False


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


def _dispatch_at(job_id: int, until: dt.datetime) -> None:
    """Send the job to run at `until` when that is soon; later ones are the sweep's."""
    delay = (until - timezone.now()).total_seconds()
    if delay <= SOON_SECONDS and EnrichmentJob.objects.filter(
        pk=job_id, dispatched_at__isnull=True
    ).update(dispatched_at=timezone.now()):
        job_dispatch(job_id=job_id, countdown=max(0.0, delay))


def _defer(job: EnrichmentJob, *, until: dt.datetime, reason: str) -> None:
    # Not an attempt: no AI call was made (or the provider asked us to wait).
    if _ours(job).update(
        status=JobStatus.DEFERRED,
        not_before=until,
        deferred_reason=reason,
        dispatched_at=None,
        lease_expires_at=None,
        attempts=F("attempts") - 1,
    ):
        memory_enrichment_status_set(memory_id=job.memory_id, status=EnrichmentStatus.DEFERRED)
        logger.info("job %s deferred until %s: %s", job.pk, until.isoformat(), reason)
        _dispatch_at(job.pk, until)


def retry_delay(*, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with "equal jitter" (a random half to all of the ceiling), never
    sooner than the provider's Retry-After."""
    ceiling = min(
        settings.ENRICHMENT_RETRY_MAX_SECONDS,
        settings.ENRICHMENT_RETRY_BASE_SECONDS * (2 ** max(0, attempts - 1)),
    )
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


def _retry_or_fail(job: EnrichmentJob, error: ProviderError) -> str:
    message = str(error)[:2000]
    if error.rate_limited:
        # Not an outage and not the job's fault: wait as long as the provider asked.
        wait = (
            error.retry_after
            if error.retry_after is not None
            else retry_delay(attempts=1, retry_after=None)
        )
        _defer(job, until=timezone.now() + dt.timedelta(seconds=wait), reason=RATE_LIMITED)
        ENRICHMENT_RETRIES.labels("rate_limited").inc()
        return "deferred"
    if error.retryable and job.attempts < settings.ENRICHMENT_MAX_ATTEMPTS:
        ENRICHMENT_RETRIES.labels("error").inc()
        delay = retry_delay(attempts=job.attempts, retry_after=error.retry_after)
        until = timezone.now() + dt.timedelta(seconds=delay)
        if _ours(job).update(
            status=JobStatus.PENDING,
            not_before=until,
            dispatched_at=None,
            lease_expires_at=None,
            last_error=message,
        ):
            memory_enrichment_status_set(memory_id=job.memory_id, status=EnrichmentStatus.PENDING)
            _dispatch_at(job.pk, until)
        logger.warning("job %s: %s; retry %s in %.1fs", job.pk, message, job.attempts, delay)
        return "retrying"
    if _finish(job, JobStatus.FAILED, message):
        memory_enrichment_status_set(memory_id=job.memory_id, status=EnrichmentStatus.FAILED)
    logger.error("job %s failed after %s attempts: %s", job.pk, job.attempts, message)
    return "failed"


def _metered(
    job: EnrichmentJob, memory: Memory, provider: Provider, *, operation, model, estimate, call
):
    """One AI call of the job through the metering door; the first one of a job counts as an
    enrichment run of the user (also if the run is later superseded or lost)."""
    counts = not job.usage_counted

    def counted() -> None:
        _ours(job).update(usage_counted=True)
        job.usage_counted = True

    return metered_call(
        provider=provider,
        operation=operation,
        model=model,
        estimate=estimate,
        call=call,
        user_id=memory.user_id,
        memory_id=memory.pk,
        counts_enrichment=counts,
        on_reserved=counted if counts else None,
    )


def _text_current(job: EnrichmentJob) -> bool:
    text = Memory.objects.filter(pk=job.memory_id, deleted_at__isnull=True).values_list(
        "text_content", flat=True
    )
    current = text.first()
    return current is not None and text_hash(current) == job.text_hash


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
    started = time.monotonic()
    outcome = "error"  # an exception escaped the run
    job = EnrichmentJob.objects.select_related("memory").get(pk=job_id)
    try:
        outcome = _run(job, provider or get_provider())
        return outcome
    finally:
        ENRICHMENT_JOB_DURATION.labels(outcome).observe(time.monotonic() - started)
        _dispatch_waiting(memory_id=job.memory_id, after=job.pk)


def _run(job: EnrichmentJob, provider: Provider) -> str:
    memory = job.memory
    if memory.deleted_at is not None:
        _finish(job, JobStatus.CANCELLED, "memory deleted")
        return "cancelled"
    if text_hash(memory.text_content) != job.text_hash:
        _finish(job, JobStatus.CANCELLED, "superseded by newer text")
        return "superseded"
    memory_enrichment_status_set(memory_id=memory.pk, status=EnrichmentStatus.PROCESSING)
    text = memory.text_content
    classification = job.classification
    try:
        if classification is None:
            result = _metered(
                job, memory, provider, operation="classification",
                model=provider.classification_model,
                estimate=provider.estimate_classification_tokens(text),
                call=lambda: provider.classify(text),
            )  # fmt: skip
            classification = {"category": result.category, "tags": result.tags}
            _ours(job).update(classification=classification)
            if not _text_current(job):
                # Edited while we classified: don't pay for an embedding of the old text.
                _finish(job, JobStatus.CANCELLED, "superseded by newer text")
                return "superseded"
        embedding = _metered(
            job, memory, provider, operation="embedding", model=provider.embedding_model,
            estimate=provider.estimate_embedding_tokens(text),
            call=lambda: provider.embed(text),
        )  # fmt: skip
    except metering.Refused as refused:
        _defer(job, until=refused.until, reason=refused.reason)
        return "deferred"
    except ProviderError as error:
        return _retry_or_fail(job, error)
    return _complete(job, classification, embedding)


def _complete(job: EnrichmentJob, classification: dict, embedding) -> str:
    outcome = memory_enrichment_apply(
        memory_id=job.memory_id,
        text_hash_is=lambda text: text_hash(text) == job.text_hash,
        confirm=lambda: _finish(job, JobStatus.COMPLETED),
        category=classification["category"],
        tags=classification["tags"],
        embedding=embedding,
    )
    if outcome == "deleted":
        _finish(job, JobStatus.CANCELLED, "memory deleted")
        return "cancelled"
    if outcome == "superseded":
        # The text changed while we worked: the newer job's result is the one to keep.
        _finish(job, JobStatus.CANCELLED, "superseded by newer text")
        return "superseded"
    if outcome == "unconfirmed":
        return "lost_claim"  # our lease expired and another run owns the job now
    return "completed"


def _dispatch_waiting(*, memory_id, after: int) -> None:
    """A run of this memory ended: send the memory's job that waited for it, if one is due."""
    now = timezone.now()
    waiting = (
        EnrichmentJob.objects.filter(memory_id=memory_id, status__in=WAITING_STATUSES)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .exclude(pk=after)
        .values_list("pk", flat=True)
        .first()
    )
    if waiting is not None:
        EnrichmentJob.objects.filter(pk=waiting).update(dispatched_at=now)
        job_dispatch(job_id=waiting)


def jobs_wake(*, reasons: tuple[str, ...] | list[str]) -> int:
    """Jobs deferred for one of `reasons` become due now and the first batch is dispatched:
    the budget breaker closed (resume, a raised limit) or budget held in flight was given back.
    Returns how many were woken."""
    now = timezone.now()
    woken = EnrichmentJob.objects.filter(
        status=JobStatus.DEFERRED, deferred_reason__in=reasons, not_before__gt=now
    ).update(not_before=now, dispatched_at=None)
    if woken:
        logger.info("%s deferred job(s) woken (%s)", woken, ", ".join(reasons))
        jobs_sweep(now=now)
    return woken


# --- re-embedding after a model change ------------------------------------------------------

# pg_try_advisory_lock key: one re-embedding run at a time across every process.
REEMBED_LOCK = 0x4D43_5245  # "MCRE"


@dataclass(frozen=True)
class ReembedResult:
    done: int
    stopped: str = ""  # why it stopped early: "busy", "running elsewhere", a refusal, an error


def embeddings_refresh(
    *, limit: int, when_idle: bool = True, progress: Callable[[int], None] | None = None
) -> ReembedResult:
    """Re-embed up to `limit` memories whose embedding another model made, oldest first, each
    through the metering door (an "embedding" call of its owner, not counted as an enrichment
    run). With `when_idle`, only while no enrichment job waits or runs: new memories always
    come first. Stops at the first refusal (budget, breaker, user limit) or provider error;
    the next run goes on. One run at a time (an advisory lock), so no memory is paid twice."""
    from .selectors import embeddings_stale

    if (
        when_idle
        and EnrichmentJob.objects.filter(
            status__in=(JobStatus.PENDING, JobStatus.PROCESSING)
        ).exists()
    ):
        return ReembedResult(0, "busy")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [REEMBED_LOCK])
        if not cursor.fetchone()[0]:
            return ReembedResult(0, "running elsewhere")
    done, stopped, skipped = 0, "", set()
    provider = get_provider()
    try:
        while done < limit:
            row = (
                embeddings_stale()
                .exclude(memory_id__in=skipped)
                .order_by("memory_id")
                .values_list("memory_id", "user_id", "memory__text_content")
                .first()
            )
            if row is None:
                break
            memory_id, user_id, text = row
            try:
                embedding = _embed_metered(provider, memory_id, user_id, text)
            except metering.Refused as refused:
                stopped = refused.reason
                break
            except ProviderError as error:
                stopped = f"provider error: {error}"
                break
            if not memory_embedding_refresh(
                memory_id=memory_id,
                text_is=lambda current, sent=text: current == sent,
                embedding=embedding,
            ):
                skipped.add(memory_id)  # edited or deleted meanwhile: its new job embeds it
            elif embeddings_stale().filter(memory_id=memory_id).exists():
                # The provider answers another model or size than configured: going on would
                # pay for the same memories again and again.
                stopped = (
                    f"the provider answered {embedding.model} ({embedding.dimensions} "
                    "dimensions), not the configured model"
                )
                logger.error("re-embedding stopped: %s", stopped)
                break
            done += 1
            if progress:
                progress(done)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [REEMBED_LOCK])
    if done or stopped:
        logger.info("re-embedding: %s done%s", done, f", stopped: {stopped}" if stopped else "")
    return ReembedResult(done, stopped)


def _embed_metered(provider: Provider, memory_id, user_id: int, text: str):
    return metered_call(
        provider=provider,
        operation="embedding",
        model=provider.embedding_model,
        estimate=provider.estimate_embedding_tokens(text),
        call=lambda: provider.embed(text),
        user_id=user_id,
        memory_id=memory_id,
    )


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
            memory_enrichment_status_set(memory_id=memory.pk, status=EnrichmentStatus.PENDING)
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
            memory_enrichment_status_set(memory_id=memory.pk, status=EnrichmentStatus.PENDING)
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
