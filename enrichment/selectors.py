"""Read queries about the pipeline, shared by the admin API, the admin and the dashboard."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from common.clock import day_start, today

from .models import EnrichmentJob, JobStatus, WorkerHeartbeat


def workers_live(*, now: dt.datetime | None = None) -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is newer than three intervals."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=3 * settings.ENRICHMENT_HEARTBEAT_SECONDS)
    return list(WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).order_by("hostname"))


def queue_counts() -> dict[str, int]:
    """Jobs waiting and running now, and finished today (budget day), in one query."""
    since = day_start(today())
    # Only rows that can count (waiting, running, or finished today) — found through the
    # status/finished_at indexes, never a scan of the whole job history.
    relevant = EnrichmentJob.objects.filter(
        Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.DEFERRED])
        | Q(finished_at__gte=since)
    )
    counts = relevant.aggregate(
        pending=Count("pk", filter=Q(status=JobStatus.PENDING)),
        processing=Count("pk", filter=Q(status=JobStatus.PROCESSING)),
        deferred=Count("pk", filter=Q(status=JobStatus.DEFERRED)),
        completedToday=Count("pk", filter=Q(status=JobStatus.COMPLETED, finished_at__gte=since)),
        failedToday=Count("pk", filter=Q(status=JobStatus.FAILED, finished_at__gte=since)),
    )
    return {key: int(value or 0) for key, value in counts.items()}


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
        "timestamp": timezone.now(),
    }
