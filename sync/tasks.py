"""Celery wrapper for the hourly tombstone purge."""

from __future__ import annotations

from celery import shared_task

from .services import sync_tombstones_purge


@shared_task(
    name="sync.tombstones_purge",
    acks_late=True,
    soft_time_limit=600,
    time_limit=660,
    ignore_result=True,
)
def tombstones_purge() -> int:
    # Batches in their own transactions, skipping locked rows: safe to run twice or at once.
    return sync_tombstones_purge()
