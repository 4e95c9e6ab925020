"""Idempotency-Key: the first answer per (user, key) is kept and replayed for repeats.

A key is claimed by inserting its row (committed at once, so a concurrent repeat sees it and
gets 409); the handler's writes and the stored answer then commit together, so a repeat either
replays that answer or finds nothing done. A claim whose request died is reclaimable after
IDEMPOTENCY_LOCK_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import ConflictError, DomainError, UnprocessableError

from .models import IdempotencyKey

MAX_KEY_LENGTH = 255


class InvalidIdempotencyKey(DomainError):
    code = "invalid_idempotency_key"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def idempotency_key_validate(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not all(32 < ord(c) < 127 for c in key):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
            "without spaces.",
            details={"Idempotency-Key": ["invalid"]},
        )
    return key


def request_fingerprint(*, method: str, path: str, data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _reclaimable(record: IdempotencyKey, now: dt.datetime) -> bool:
    if record.created_at <= now - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS):
        return True
    lock_expired = record.created_at <= now - dt.timedelta(
        seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS
    )
    return record.state == IdempotencyKey.State.IN_FLIGHT and lock_expired


def idempotency_claim(*, user, key: str, fingerprint: str) -> IdempotencyKey | StoredResponse:
    """Claim `key` for this request, or return the stored answer of an earlier one."""
    for _ in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    user=user, key=key, fingerprint=fingerprint, created_at=now
                )
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # purged between our insert and our read; claim again
        if _reclaimable(existing, now):
            # Compare-and-set on the row as we read it: one of several reclaimers wins.
            taken = IdempotencyKey.objects.filter(
                pk=existing.pk, state=existing.state, created_at=existing.created_at
            ).update(
                fingerprint=fingerprint,
                state=IdempotencyKey.State.IN_FLIGHT,
                created_at=now,
                response_status=None,
                response_body=None,
            )
            if taken:
                existing.refresh_from_db()
                return existing
            continue
        if existing.fingerprint != fingerprint:
            raise UnprocessableError(
                "This Idempotency-Key was already used with a different request body.",
                details={"Idempotency-Key": ["reused with a different request"]},
            )
        if existing.state == IdempotencyKey.State.IN_FLIGHT:
            raise ConflictError(
                "A request with this Idempotency-Key is still in progress; retry shortly.",
                details={"Idempotency-Key": ["in flight"]},
                headers={"Retry-After": "1"},
            )
        return StoredResponse(status=existing.response_status, body=existing.response_body)
    raise ConflictError(
        "This Idempotency-Key is contended; retry shortly.", headers={"Retry-After": "1"}
    )


def idempotent_execute(
    *, user, key: str, fingerprint: str, handler: Callable[[], tuple[int, Any]]
) -> tuple[StoredResponse, bool]:
    """Run `handler` at most once per (user, key, request); return (answer, replayed)."""
    claim = idempotency_claim(user=user, key=key, fingerprint=fingerprint)
    if isinstance(claim, StoredResponse):
        return claim, True
    try:
        with transaction.atomic():
            status, body = handler()
            stored = IdempotencyKey.objects.filter(
                pk=claim.pk, state=IdempotencyKey.State.IN_FLIGHT, created_at=claim.created_at
            ).update(
                state=IdempotencyKey.State.COMPLETED, response_status=status, response_body=body
            )
            if not stored:
                # Our claim expired and was taken over: undo, and let the client retry.
                raise ConflictError(
                    "This Idempotency-Key was taken over by another request; retry.",
                    headers={"Retry-After": "1"},
                )
    except BaseException:
        IdempotencyKey.objects.filter(
            pk=claim.pk, state=IdempotencyKey.State.IN_FLIGHT, created_at=claim.created_at
        ).delete()
        raise
    return StoredResponse(status=status, body=body), False


def idempotency_keys_purge(*, now: dt.datetime | None = None) -> int:
    """Delete keys past their retention; returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
