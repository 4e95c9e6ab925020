"""Celery tasks: thin wrappers that take ids and call services."""

import threading

from celery import shared_task
from celery.signals import beat_init
from django.conf import settings

from . import monitoring, services


@shared_task(
    name=services.PROCESS_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
)
def process_job(self, job_id: int) -> str:
    return services.job_process(job_id=job_id, worker=self.request.hostname or "")


@shared_task(name="enrichment.sweep", ignore_result=True, time_limit=120, soft_time_limit=100)
def sweep() -> dict:
    result = services.jobs_sweep()
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
