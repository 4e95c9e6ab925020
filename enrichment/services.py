"""Enrichment use cases: jobs are created with their memory, dispatched on commit, claimed by
compare-and-set, metered against the budget, and finished exactly once.

Every step is safe to run twice: a duplicate delivery finds nothing to claim, a crashed run's
lease expires and the sweep hands the job out again, and a finished classification is kept on
the job so a re-run does not pay for it twice."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.metrics import ENRICHMENT_JOB_DURATION, ENRICHMENT_RETRIES
from common.publish import TaskMessage, task_publish, task_publish_on_commit, tasks_publish
from costs import budget, metering
from costs.breaker import provider_breaker_quiet_sql
from memories.models import EnrichmentStatus, Memory
from memories.services import (
    EnrichmentResult,
    memories_embedding_refresh,
    memories_enrichment_apply,
    memories_enrichment_status_set,
    memory_enrichment_status_set,
)

from .models import ACTIVE_STATUSES, EnrichmentJob, JobStatus, WorkerHeartbeat
from .providers import Provider, ProviderError, get_provider
from .providers.base import EmbeddingResult

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


def text_hash_sql(column: str) -> str:
    """`text_hash` of a text column, computed by PostgreSQL (the same digest)."""
    return f"encode(sha256(convert_to({column}, 'UTF8')), 'hex')"


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
    # Sent after the commit, or with the others of a publishes_batched() block (a sync push).
    task_publish_on_commit(
        PROCESS_TASK,
        [job.pk],
        Queue.ENRICHMENT,
        on_failure=lambda: _jobs_undispatched([job.pk]),
    )
    return job


def _jobs_undispatched(job_ids: list[int]) -> None:
    """The broker did not take these jobs' tasks: they wait for the next sweep."""
    EnrichmentJob.objects.filter(pk__in=job_ids).update(dispatched_at=None)


def job_dispatch(*, job_id: int, countdown: float | None = None) -> bool:
    """Send the job's task (after `countdown` seconds). If the broker is unreachable the job
    stays waiting and the sweep sends it later; the caller never fails because of the broker."""
    if task_publish(PROCESS_TASK, [job_id], Queue.ENRICHMENT, countdown=countdown):
        return True
    _jobs_undispatched([job_id])
    return False


def jobs_dispatch(*, job_ids: list[int]) -> int:
    """Send many jobs' tasks over one broker connection (the sweep); the ones not sent stay
    waiting for the next sweep. Returns how many were sent."""
    sent = tasks_publish([TaskMessage(PROCESS_TASK, [pk], Queue.ENRICHMENT) for pk in job_ids])
    if sent < len(job_ids):
        _jobs_undispatched(job_ids[sent:])
    return sent


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
            with transaction.atomic():  # the job and its memory's status change together
                if same.update(
                    status=JobStatus.FAILED,
                    finished_at=now,
                    lease_expires_at=None,
                    last_error="worker lost: lease expired after the last attempt",
                ):
                    memory_enrichment_status_set(
                        memory_id=memory_id, status=EnrichmentStatus.FAILED
                    )
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
        claimed = [
            pk
            for pk, status, dispatched_at in jobs_due(
                now=now, limit=limit or settings.ENRICHMENT_BATCH_SIZE, jobs=jobs
            )
            # Compare-and-set, so two sweeps running at once send each job once.
            if EnrichmentJob.objects.filter(
                pk=pk, status=status, dispatched_at=dispatched_at
            ).update(dispatched_at=now)
        ]
        dispatched = jobs_dispatch(job_ids=claimed)
    result = SweepResult(dispatched, requeued, failed, expired)
    log = logger.info if dispatched or requeued or failed or expired else logger.debug
    log("sweep: %s", result)
    return result


# --- processing jobs in batches -----------------------------------------------------------------

# Batches one task runs at most before it lets the worker take its next message.
BATCHES_PER_TASK = 10


@dataclass
class _Run:
    """One claimed job of a batch, with its memory as the claim returned it."""

    job: EnrichmentJob
    user_id: int
    text: str
    deleted: bool
    classification: dict | None = None
    embedding: EmbeddingResult | None = None
    outcome: str = ""
    breaker_quiet: bool = False  # the claim read the provider breaker closed, no failures


def _claim_batch(*, job_ids: list[int], more: bool, limit: int, worker: str) -> list[_Run]:
    """Claim up to `limit` due jobs for one run each — `job_ids` first, then (with `more`) the
    oldest others — in ONE statement: the due jobs are locked with SKIP LOCKED (two workers never
    claim one job), set to processing, and returned joined to their memory. A job whose memory is
    being enriched by another run stays waiting: that run dispatches it when it ends. The same
    statement shows the live memories as processing and reads the provider breaker. Job and
    memory are locked together (FOR NO KEY UPDATE), skipping either if locked: a text edit
    locks the memory, then its waiting jobs, so a claim waiting for the memory could deadlock
    with it."""
    now = timezone.now()
    jobs = EnrichmentJob._meta.db_table
    memories = Memory._meta.db_table
    breaker_quiet = provider_breaker_quiet_sql()
    sql = f"""
        WITH due AS (
            SELECT j.id FROM {jobs} j JOIN {memories} m ON m.id = j.memory_id
            WHERE j.status = ANY(%(waiting)s)
              AND (j.not_before IS NULL OR j.not_before <= %(now)s)
              AND (j.id = ANY(%(ids)s) OR %(more)s)
              AND NOT EXISTS (
                  SELECT 1 FROM {jobs} p
                  WHERE p.memory_id = j.memory_id AND p.status = %(processing)s
              )
            ORDER BY j.id = ANY(%(ids)s) DESC, j.id
            LIMIT %(limit)s
            FOR NO KEY UPDATE OF j, m SKIP LOCKED
        ), claimed AS (
            UPDATE {jobs} j SET status = %(processing)s, attempts = j.attempts + 1,
                lease_expires_at = %(lease)s, started_at = %(now)s, worker = %(worker)s,
                deferred_reason = '', updated_at = %(now)s
            FROM due WHERE j.id = due.id
            RETURNING j.id, j.memory_id, j.attempts, j.text_hash, j.classification,
                j.usage_counted
        ), processing AS (
            UPDATE {memories} m SET enrichment_status = %(memory_processing)s
            FROM claimed c
            WHERE m.id = c.memory_id AND m.deleted_at IS NULL
              AND {text_hash_sql("m.text_content")} = c.text_hash
            RETURNING m.id, m.user_id, m.text_content
        )
        SELECT c.id, c.memory_id, c.attempts, c.text_hash, c.classification, c.usage_counted,
            m.user_id, m.text_content, m.deleted_at IS NOT NULL, {breaker_quiet}
        FROM claimed c JOIN {memories} m ON m.id = c.memory_id ORDER BY c.id
    """  # noqa: S608 - table names are our own
    params = {
        "waiting": list(WAITING_STATUSES),
        "processing": JobStatus.PROCESSING,
        "memory_processing": EnrichmentStatus.PROCESSING,
        "now": now,
        "ids": list(job_ids),
        "more": more,
        "limit": limit,
        "lease": now + dt.timedelta(seconds=settings.ENRICHMENT_LEASE_SECONDS),
        "worker": worker[:255],
    }
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except IntegrityError:
        # Two waiting jobs of one memory in one claim (rare): claim them one at a time.
        if limit == 1:
            logger.debug("jobs %s wait: another run of their memory is in flight", job_ids)
            return []
        runs: list[_Run] = []
        for job_id in job_ids:
            runs += _claim_batch(job_ids=[job_id], more=False, limit=1, worker=worker)
        return runs
    runs = []
    for row in rows:
        pk, memory_id, attempts, hashed, classification, counted, user_id, text, gone, quiet = row
        if isinstance(classification, str):
            classification = json.loads(classification)
        job = EnrichmentJob(
            pk=pk, memory_id=memory_id, attempts=attempts, text_hash=hashed,
            classification=classification, usage_counted=counted,
            status=JobStatus.PROCESSING,
        )  # fmt: skip
        runs.append(_Run(job, user_id, text, gone, classification, breaker_quiet=quiet))
    return runs


def _ours(job: EnrichmentJob):
    """The job row, only while this run still holds its claim."""
    return EnrichmentJob.objects.filter(
        pk=job.pk, status=JobStatus.PROCESSING, attempts=job.attempts
    )


def _all_ours(runs: list[_Run]):
    """The runs' job rows, only while these runs still hold their claims."""
    if not runs:
        return EnrichmentJob.objects.none()
    claims = Q()
    for run in runs:
        claims |= Q(pk=run.job.pk, attempts=run.job.attempts)
    return EnrichmentJob.objects.filter(claims, status=JobStatus.PROCESSING)


def _finish(job: EnrichmentJob, status: str, error: str = "") -> bool:
    return bool(
        _ours(job).update(
            status=status, finished_at=timezone.now(), lease_expires_at=None, last_error=error
        )
    )


def _end(runs: list[_Run], outcome: str, status: str, error: str) -> None:
    """Finish these runs' jobs with `status` (the ones still ours)."""
    if runs:
        _all_ours(runs).update(
            status=status, finished_at=timezone.now(), lease_expires_at=None, last_error=error
        )
        for run in runs:
            run.outcome = outcome


def _dispatch_at(job_ids: list[int], until: dt.datetime) -> None:
    """Send the jobs to run at `until` when that is soon; later ones are the sweep's. One task
    is enough for all of them: it claims every due job, up to a batch."""
    delay = (until - timezone.now()).total_seconds()
    if delay > SOON_SECONDS or not job_ids:
        return
    if EnrichmentJob.objects.filter(pk__in=job_ids, dispatched_at__isnull=True).update(
        dispatched_at=timezone.now()
    ):
        job_dispatch(job_id=min(job_ids), countdown=max(0.0, delay))


def _defer(runs: list[_Run], *, until: dt.datetime, reason: str) -> None:
    """Put the runs' jobs back to wait until `until` — not an attempt: no AI call was made (or
    the provider asked us to wait)."""
    if not runs:
        return
    with transaction.atomic():
        # The claims we still hold, locked until they are given up.
        ids = list(_all_ours(runs).select_for_update().values_list("pk", flat=True))
        EnrichmentJob.objects.filter(pk__in=ids).update(
            status=JobStatus.DEFERRED,
            not_before=until,
            deferred_reason=reason,
            dispatched_at=None,
            lease_expires_at=None,
            attempts=F("attempts") - 1,
        )
        memory_ids = [run.job.memory_id for run in runs if run.job.pk in ids]
        memories_enrichment_status_set(memory_ids=memory_ids, status=EnrichmentStatus.DEFERRED)
    for run in runs:
        run.outcome = "deferred"
    logger.info("%s job(s) deferred until %s: %s", len(ids), until.isoformat(), reason)
    _dispatch_at(ids, until)


def _defer_refused(runs: list[_Run], refused: dict[int, metering.Refused]) -> None:
    groups: dict[tuple[dt.datetime, str], list[_Run]] = {}
    for run in runs:
        answer = refused[run.job.pk]
        groups.setdefault((answer.until, answer.reason), []).append(run)
    for (until, reason), group in groups.items():
        _defer(group, until=until, reason=reason)


def retry_delay(*, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with "equal jitter" (a random half to all of the ceiling), never
    sooner than the provider's Retry-After."""
    ceiling = min(
        settings.ENRICHMENT_RETRY_MAX_SECONDS,
        settings.ENRICHMENT_RETRY_BASE_SECONDS * (2 ** max(0, attempts - 1)),
    )
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


def _retry_or_fail(run: _Run, error: ProviderError) -> None:
    job = run.job
    message = str(error)[:2000]
    if error.rate_limited:
        # Not an outage and not the job's fault: wait as long as the provider asked.
        wait = (
            error.retry_after
            if error.retry_after is not None
            else retry_delay(attempts=1, retry_after=None)
        )
        _defer([run], until=timezone.now() + dt.timedelta(seconds=wait), reason=RATE_LIMITED)
        ENRICHMENT_RETRIES.labels("rate_limited").inc()
        return
    if error.retryable and job.attempts < settings.ENRICHMENT_MAX_ATTEMPTS:
        ENRICHMENT_RETRIES.labels("error").inc()
        delay = retry_delay(attempts=job.attempts, retry_after=error.retry_after)
        until = timezone.now() + dt.timedelta(seconds=delay)
        with transaction.atomic():  # the job and its memory's status change together
            retrying = _ours(job).update(
                status=JobStatus.PENDING,
                not_before=until,
                dispatched_at=None,
                lease_expires_at=None,
                last_error=message,
            )
            if retrying:
                memory_enrichment_status_set(
                    memory_id=job.memory_id, status=EnrichmentStatus.PENDING
                )
        if retrying:
            _dispatch_at([job.pk], until)
        logger.warning("job %s: %s; retry %s in %.1fs", job.pk, message, job.attempts, delay)
        run.outcome = "retrying"
        return
    with transaction.atomic():
        if _finish(job, JobStatus.FAILED, message):
            memory_enrichment_status_set(memory_id=job.memory_id, status=EnrichmentStatus.FAILED)
    logger.error("job %s failed after %s attempts: %s", job.pk, job.attempts, message)
    run.outcome = "failed"


def _item(run: _Run, estimate) -> metering.Item:
    """The run's share of a batched call; the first call of a job counts as an enrichment run
    of the user (also if the run is later superseded or lost)."""
    return metering.Item(
        key=run.job.pk, user_id=run.user_id, memory_id=run.job.memory_id,
        input_tokens=estimate.input_tokens, max_output_tokens=estimate.output_tokens,
        counts_enrichment=not run.job.usage_counted,
    )  # fmt: skip


def _held(runs: list[_Run], batch: metering.MeteredBatch) -> list[_Run]:
    """After a hold: defer the refused runs, return the admitted."""
    _defer_refused([run for run in runs if run.job.pk in batch.refused], batch.refused)
    return [run for run in runs if run.job.pk not in batch.refused]


def _metered_batch(runs: list[_Run], provider: Provider, *, operation: str, model: str, estimate):
    """The door for one step of a batch: an item per run (`estimate(text)`), the breaker as the
    claim read it, and the runs' first calls marked counted inside the holding transaction."""
    by_pk = {run.job.pk: run for run in runs}

    def counted(keys) -> None:
        _all_ours([by_pk[key] for key in keys]).update(usage_counted=True)
        for key in keys:
            by_pk[key].job.usage_counted = True

    return metering.meter_batch(
        operation=operation,
        provider=provider.name,
        model=model,
        items=[_item(run, estimate(run.text)) for run in runs],
        breaker_quiet=all(run.breaker_quiet for run in runs),
        on_held=counted,
    )


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _concurrently(function: Callable, runs: list[_Run]) -> None:
    """Run `function(run)` for each run on a bounded pool of threads (made once per process);
    the calls are network-bound, the database is not touched from these threads."""
    global _pool  # noqa: PLW0603 - one pool per process, made after a fork
    if len(runs) <= 1 or settings.ENRICHMENT_CLASSIFY_CONCURRENCY <= 1:
        for run in runs:
            function(run)
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.ENRICHMENT_CLASSIFY_CONCURRENCY, thread_name_prefix="classify"
            )
    futures = [_pool.submit(function, run) for run in runs]
    try:
        for future in futures:
            future.result()
    finally:
        # Also when the task is interrupted here (its soft time limit): the calls under way
        # finish and report to their metered batch before it closes, so what the provider
        # billed is written, not lost.
        wait(futures)


def _classify(runs: list[_Run], provider: Provider) -> list[_Run]:
    """Classify the runs that need it, concurrently, in one metered batch; returns the runs that
    go on to the embedding."""
    needed = [run for run in runs if run.classification is None]
    if not needed:
        return runs
    errors: dict[int, ProviderError] = {}
    with _metered_batch(
        needed, provider, operation="classification", model=provider.classification_model,
        estimate=provider.estimate_classification_tokens,
    ) as batch:  # fmt: skip
        admitted = _held(needed, batch)

        def classify(run: _Run) -> None:
            try:
                result = provider.classify(run.text)
            except ProviderError as error:
                batch.fail(run.job.pk, usage=error.usage, outage=not error.rate_limited)
                errors[run.job.pk] = error
                return
            except Exception as error:  # noqa: BLE001 - one item's bug must not fail the batch
                logger.exception("job %s: classification raised", run.job.pk)
                errors[run.job.pk] = ProviderError(type(error).__name__, retryable=True)
                return
            batch.settle(run.job.pk, model=result.model, usage=result.usage)
            run.classification = {"category": result.category, "tags": result.tags}

        _concurrently(classify, admitted)
        classified = [run for run in admitted if run.classification is not None]
        # The ledger rows and the results kept on the jobs commit together: a crash after
        # paying for a classification never leaves a job that would pay for it again.
        with transaction.atomic():
            batch.flush()
            _classifications_keep(classified)
    for run in admitted:
        if run.job.pk in errors:
            _retry_or_fail(run, errors[run.job.pk])
    # Edited or deleted while we classified: don't pay for an embedding of the old text.
    current = dict(
        Memory.objects.filter(
            pk__in=[run.job.memory_id for run in classified], deleted_at__isnull=True
        ).values_list("pk", "text_content")
    )
    stale = [
        run
        for run in classified
        if text_hash(current.get(run.job.memory_id, "")) != run.job.text_hash
    ]
    _end(stale, "superseded", JobStatus.CANCELLED, "superseded by newer text")
    return [run for run in runs if run.classification is not None and run not in stale]


def _update_ours(
    runs: list[_Run], assignments: str, params: list, *, value=None, returning: str = ""
) -> list[tuple]:
    """One UPDATE of the runs' jobs still ours (the rule of `_all_ours`: same id, same
    attempts, still processing). `assignments` may use `v.value`, a value per run (`value(run)`,
    SQL-cast), and `%s` placeholders filled from `params`; `returning` names columns to return."""
    if not runs:
        return []
    cast = f", %s::{value[0]}" if value else ""
    rows = ", ".join([f"(%s, %s{cast})"] * len(runs))
    row_params: list = []
    for run in runs:
        row_params += [run.job.pk, run.job.attempts, *([value[1](run)] if value else [])]
    columns = "id, attempts, value" if value else "id, attempts"
    sql = (
        f"UPDATE {EnrichmentJob._meta.db_table} j SET {assignments} "  # noqa: S608 - our table
        f"FROM (VALUES {rows}) AS v({columns}) "
        "WHERE j.id = v.id AND j.attempts = v.attempts AND j.status = %s"
        + (f" RETURNING {returning}" if returning else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *row_params, JobStatus.PROCESSING])
        return cursor.fetchall() if returning else []


def _classifications_keep(runs: list[_Run]) -> None:
    """Keep each finished classification on its job (one statement), so that a re-run of the
    job does not pay for it twice."""
    _update_ours(
        runs,
        "classification = v.value",
        [],
        value=("jsonb", lambda run: json.dumps(run.classification)),
    )


def _embed_and_complete(runs: list[_Run], provider: Provider) -> None:
    """Embed the runs' texts in one request (the API takes a list) inside one metered batch;
    each memory's tokens are its share of the request's usage (also of a failed request's, when
    the provider billed it). An input the provider refuses (a 4xx) makes the request fail: then
    each text is sent alone, so only that one fails. The embeddings, the completed jobs and the
    ledger rows commit together."""
    if not runs:
        return
    with _metered_batch(
        runs, provider, operation="embedding", model=provider.embedding_model,
        estimate=provider.estimate_embedding_tokens,
    ) as batch:  # fmt: skip
        admitted = _held(runs, batch)
        errors: dict[int, ProviderError] = {}
        groups = [admitted] if admitted else []
        while groups:
            group = groups.pop()
            try:
                results = provider.embed_many([run.text for run in group])
            except ProviderError as error:
                if len(group) > 1 and not error.retryable and error.usage is None:
                    groups += [[run] for run in group]
                    continue
                for run, usage in zip(group, error.shares(len(group)), strict=True):
                    batch.fail(run.job.pk, usage=usage, outage=not error.rate_limited)
                    errors[run.job.pk] = error
                continue
            for run, result in zip(group, results, strict=True):
                batch.settle(run.job.pk, model=result.model, usage=result.usage)
                run.embedding = result
        with transaction.atomic():
            batch.flush()
            _complete(admitted)
    for run in admitted:
        if run.job.pk in errors:
            _retry_or_fail(run, errors[run.job.pk])


def _complete(runs: list[_Run]) -> None:
    done = [run for run in runs if run.embedding is not None]
    if not done:
        return
    outcomes = memories_enrichment_apply(
        results=[
            EnrichmentResult(
                memory_id=run.job.memory_id,
                text_hash=run.job.text_hash,
                category=run.classification["category"],
                tags=run.classification["tags"],
                embedding=run.embedding,
            )
            for run in done
        ],
        text_hash=text_hash,
        confirm=lambda memory_ids: _jobs_complete(
            [r for r in done if r.job.memory_id in memory_ids]
        ),
    )
    for run in done:
        outcome = outcomes[run.job.memory_id]
        if outcome == "enriched":
            run.outcome = "completed"
        elif outcome == "unconfirmed":
            run.outcome = "lost_claim"  # our lease expired and another run owns the job now
    _end([r for r in done if outcomes[r.job.memory_id] == "deleted"], "cancelled",
         JobStatus.CANCELLED, "memory deleted")  # fmt: skip
    # The text changed while we worked: the newer job's result is the one to keep.
    _end([r for r in done if outcomes[r.job.memory_id] == "superseded"], "superseded",
         JobStatus.CANCELLED, "superseded by newer text")  # fmt: skip


def _jobs_complete(runs: list[_Run]) -> set:
    """Complete the runs' jobs still ours (one statement); returns their memory ids."""
    rows = _update_ours(
        runs,
        "status = %s, finished_at = %s, lease_expires_at = NULL, last_error = ''",
        [JobStatus.COMPLETED, timezone.now()],
        returning="j.memory_id",
    )
    return {memory_id for (memory_id,) in rows}


def _process(runs: list[_Run], provider: Provider) -> None:
    """One claimed batch, end to end; each run ends with its outcome."""
    _end([r for r in runs if r.deleted], "cancelled", JobStatus.CANCELLED, "memory deleted")
    _end([r for r in runs if not r.deleted and text_hash(r.text) != r.job.text_hash],
         "superseded", JobStatus.CANCELLED, "superseded by newer text")  # fmt: skip
    live = [run for run in runs if not run.outcome]  # shown as processing by the claim
    classified = _classify(live, provider)
    _embed_and_complete(classified, provider)


def jobs_process(
    *,
    job_ids: list[int] = (),
    more: bool = True,
    batches: int = 1,
    worker: str = "",
    provider: Provider | None = None,
) -> dict[int, str]:
    """Run due jobs in batches of up to ENRICHMENT_BATCH_SIZE: `job_ids` first, then (with
    `more`) the oldest other due jobs, for at most `batches` batches; a batch closes when it is
    full or when no more jobs are due (never waits). Returns each claimed job's outcome."""
    if not settings.ENRICHMENT_WORKER_ENABLED:
        # Leave them waiting and let the sweep send them again once processing is enabled.
        EnrichmentJob.objects.filter(pk__in=job_ids, status__in=WAITING_STATUSES).update(
            dispatched_at=None
        )
        return dict.fromkeys(job_ids, "disabled")
    worker = worker or f"pid-{os.getpid()}"
    provider = provider or get_provider()
    size = max(1, settings.ENRICHMENT_BATCH_SIZE) if more else max(1, len(job_ids))
    outcomes: dict[int, str] = {}
    named = list(job_ids)
    for _ in range(batches):
        runs = _claim_batch(job_ids=named, more=more, limit=size, worker=worker)
        named = []
        if not runs:
            break
        started = time.monotonic()
        try:
            _process(runs, provider)
        finally:
            elapsed = time.monotonic() - started
            for run in runs:
                run.outcome = run.outcome or "error"  # an exception escaped the batch
                outcomes[run.job.pk] = run.outcome
                ENRICHMENT_JOB_DURATION.labels(run.outcome).observe(elapsed)
            _dispatch_waiting(memory_ids=[run.job.memory_id for run in runs], after=outcomes)
        if len(runs) < size:
            break  # nothing more was due
    return outcomes


def job_process(*, job_id: int, worker: str = "", provider: Provider | None = None) -> str:
    """Run this one job end to end, alone (tests, staff tools); returns what happened:
    completed, deferred, retrying, failed, superseded, cancelled, not_claimed or disabled."""
    outcomes = jobs_process(job_ids=[job_id], more=False, worker=worker, provider=provider)
    return outcomes.get(job_id, "not_claimed")


def _dispatch_waiting(*, memory_ids: list, after: dict[int, str]) -> None:
    """Runs of these memories ended: send the memories' jobs that waited for them, if due."""
    now = timezone.now()
    waiting = list(
        EnrichmentJob.objects.filter(memory_id__in=memory_ids, status__in=WAITING_STATUSES)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .exclude(pk__in=list(after))
        .values_list("pk", flat=True)
    )
    if waiting:
        EnrichmentJob.objects.filter(pk__in=waiting).update(dispatched_at=now)
        job_dispatch(job_id=min(waiting))


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
    from .selectors import embeddings_stale, embeddings_stale_among

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
        while done < limit and not stopped:
            rows = list(
                embeddings_stale()
                .exclude(memory_id__in=skipped)
                .order_by("memory_id")
                .values_list("memory_id", "user_id", "memory__text_content")[
                    : min(max(1, settings.ENRICHMENT_BATCH_SIZE), limit - done)
                ]
            )
            if not rows:
                break
            embedded, stopped = _embed_batch_metered(provider, rows)
            stored = memories_embedding_refresh(
                refreshes=[
                    (memory_id, lambda current, sent=text: current == sent, embedded[memory_id])
                    for memory_id, _, text in rows
                    if memory_id in embedded
                ]
            )
            applied = [memory_id for memory_id, _, _ in rows if memory_id in stored]
            # Edited or deleted meanwhile: its new job embeds it.
            skipped.update(memory_id for memory_id in embedded if memory_id not in stored)
            if applied and embeddings_stale_among(applied):
                # The provider answers another model or size than configured: going on would
                # pay for the same memories again and again.
                sample = embedded[applied[0]]
                stopped = (
                    f"the provider answered {sample.model} ({sample.dimensions} "
                    "dimensions), not the configured model"
                )
                logger.error("re-embedding stopped: %s", stopped)
                break
            done += len(applied)
            if progress and applied:
                progress(done)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [REEMBED_LOCK])
    if done or stopped:
        logger.info("re-embedding: %s done%s", done, f", stopped: {stopped}" if stopped else "")
    return ReembedResult(done, stopped)


def _embed_batch_metered(provider: Provider, rows: list[tuple]) -> tuple[dict, str]:
    """Embed (memory id, user id, text) rows in one request through one metered batch (each an
    "embedding" call of its owner, not an enrichment run). Returns the embeddings by memory id
    and why the run should stop: the first refusal or a provider error ("" to go on)."""
    items = [
        metering.Item(
            key=memory_id, user_id=user_id, memory_id=memory_id,
            input_tokens=provider.estimate_embedding_tokens(text).input_tokens,
        )
        for memory_id, user_id, text in rows
    ]  # fmt: skip
    embedded, stopped = {}, ""
    with metering.meter_batch(
        operation="embedding", provider=provider.name, model=provider.embedding_model, items=items
    ) as batch:
        if batch.refused:
            stopped = next(iter(batch.refused.values())).reason
        admitted = [row for row in rows if row[0] not in batch.refused]
        if not admitted:
            return embedded, stopped
        try:
            results = provider.embed_many([text for _, _, text in admitted])
        except ProviderError as error:
            for (memory_id, _, _), usage in zip(admitted, error.shares(len(admitted)), strict=True):
                batch.fail(memory_id, usage=usage, outage=not error.rate_limited)
            return embedded, f"provider error: {error}"
        for (memory_id, _, _), result in zip(admitted, results, strict=True):
            batch.settle(memory_id, model=result.model, usage=result.usage)
            embedded[memory_id] = result
    return embedded, stopped


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
