"""Celery wrappers for memories: the periodic purge of expired Idempotency-Keys."""

from __future__ import annotations

from celery import shared_task

from . import idempotency


@shared_task(
    name="memories.idempotency_keys_purge",
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
    ignore_result=True,
)
def idempotency_keys_purge() -> int:
    """Beat, hourly: delete the keys older than IDEMPOTENCY_KEY_TTL_HOURS. Safe to run twice
    (a second run finds nothing to delete)."""
    return idempotency.idempotency_keys_purge()
