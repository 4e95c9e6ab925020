"""Celery tasks: thin wrappers that take ids and call services; the worker's and beat's
start-up hooks."""

import logging
import threading

from celery import shared_task
from celery.signals import beat_init, worker_ready
from django.conf import settings

from . import monitoring, services

logger = logging.getLogger(__name__)

# The line the reference's operators look for when the service boots.
START_MESSAGE = "Starting enrichment worker"


@shared_task(
    name=services.PROCESS_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
)
def process_job(self, job_id: int) -> dict:
    # The job, and the others due with it: batches of ENRICHMENT_BATCH_SIZE, until none is due.
    outcomes = services.jobs_process(
        job_ids=[job_id], batches=services.BATCHES_PER_TASK, worker=self.request.hostname or ""
    )
    return {"jobs": len(outcomes), "asked": outcomes.get(job_id, "not_claimed")}


@shared_task(name="enrichment.sweep", ignore_result=True, time_limit=120, soft_time_limit=100)
def sweep() -> dict:
    result = services.jobs_sweep()
    return result.__dict__


@shared_task(name="enrichment.reembed", ignore_result=True, time_limit=600, soft_time_limit=540)
def reembed() -> dict:
    # Beat, every 30 s (CELERY_BEAT_SCHEDULE): one batch of re-embedding, when the queue is idle.
    result = services.embeddings_refresh(limit=settings.ENRICHMENT_BATCH_SIZE)
    return result.__dict__


@shared_task(name="enrichment.health_check", ignore_result=True, time_limit=60, soft_time_limit=45)
def health_check() -> dict:
    # Beat, every minute (CELERY_BEAT_SCHEDULE): the health rules of enrichment.monitoring.
    return monitoring.health_check()


@beat_init.connect(dispatch_uid="enrichment.beat_watchdog")
def _start_beat_watchdog(sender=None, **kwargs) -> threading.Thread:
    # In the beat process only: the health check for when no worker is alive to run it.
    watchdog = threading.Thread(
        target=monitoring.watchdog_loop,
        args=(threading.Event(),),
        name="beat-watchdog",
        daemon=True,
    )
    watchdog.start()
    return watchdog


def start_log(*, role: str) -> dict:
    """Log START_MESSAGE once per process start, with the sweep interval, batch size and
    provider in the text and as fields (the JSON log format carries them as keys)."""
    fields = {
        "role": role,
        "pollIntervalMs": settings.ENRICHMENT_POLL_INTERVAL_MS,
        "batchSize": settings.ENRICHMENT_BATCH_SIZE,
        "provider": settings.AI_PROVIDER,
        "enabled": settings.ENRICHMENT_WORKER_ENABLED,
    }
    logger.info(
        "%s (%s): pollIntervalMs=%s batchSize=%s provider=%s enabled=%s",
        START_MESSAGE, role, fields["pollIntervalMs"], fields["batchSize"], fields["provider"],
        fields["enabled"], extra=fields,
    )  # fmt: skip
    return fields


@worker_ready.connect(dispatch_uid="enrichment.start_log_worker")
def _log_worker_start(sender=None, **kwargs) -> dict:
    # Sent once, in the worker's main process, when it starts consuming (not per pool child).
    return start_log(role="worker")


@beat_init.connect(dispatch_uid="enrichment.start_log_beat")
def _log_beat_start(sender=None, **kwargs) -> dict:
    return start_log(role="beat")


@shared_task(
    name="enrichment.batch_api_poll", ignore_result=True, time_limit=900, soft_time_limit=840
)
def batch_api_poll() -> dict:
    # Beat, every OPENAI_BATCH_POLL_SECONDS (CELERY_BEAT_SCHEDULE): poll the Batch API's open
    # batches and apply the ended ones; safe to run twice or at once (enrichment.batch_api).
    from . import batch_api

    return batch_api.batches_poll().__dict__
