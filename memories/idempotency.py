"""Idempotency-Key: the first answer per (user, key) is kept and replayed for repeats.

One transaction does it all. Its first statement takes a transaction-level advisory lock on
(user, key) without waiting and reads the stored answer, if any: a concurrent request with the
same key finds the lock held and gets 409. The handler's writes and the answer (inserted under
the unique constraint, ON CONFLICT DO NOTHING) then commit together, so a repeat either replays
that answer or finds nothing done; a request that fails or dies is rolled back, lock and all,
and its key is free at once. A row still `in_flight` (a claim committed on its own before the
handler ran) answers 409 until IDEMPOTENCY_LOCK_TIMEOUT_SECONDS, then is reclaimable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from common.errors import ConflictError, DomainError, UnprocessableError

from .models import IdempotencyKey

MAX_KEY_LENGTH = 255
TABLE = IdempotencyKey._meta.db_table

# One statement: the lock (never waiting) and the stored row as the statement's snapshot saw it.
# A row committed between that snapshot and the lock is caught by the insert's conflict below.
_CLAIM_SQL = f"""
SELECT pg_try_advisory_xact_lock(%s), k.id, k.fingerprint, k.state, k.created_at,
       k.response_status, k.response_body::text
FROM (VALUES (1)) AS one (x)
LEFT JOIN {TABLE} AS k ON k.user_id = %s AND k.key = %s
"""  # noqa: S608 - the table name is ours

_STORE_SQL = f"""
INSERT INTO {TABLE} (user_id, key, fingerprint, state, response_status, response_body, created_at)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)
ON CONFLICT (user_id, key) DO NOTHING
"""  # noqa: S608 - the table name is ours


class InvalidIdempotencyKey(DomainError):
    code = "invalid_idempotency_key"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


@dataclass(frozen=True)
class _Stored:
    """An idempotency row as the claim read it."""

    pk: int
    fingerprint: str
    state: str
    created_at: dt.datetime
    status: int | None
    body: Any


class _StoredMeanwhile(Exception):  # noqa: N818 - a signal to start over, not an error
    """Another request stored an answer for the key after our claim's snapshot."""


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


def idempotency_lock_id(*, user_id: int, key: str) -> int:
    """The advisory lock id (a signed 64-bit integer) of (user, key)."""
    digest = hashlib.blake2b(
        f"{user_id}\n{key}".encode(), digest_size=8, person=b"idempotency-key"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _reclaimable(record: _Stored, now: dt.datetime) -> bool:
    if record.created_at <= now - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS):
        return True
    lock_expired = record.created_at <= now - dt.timedelta(
        seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS
    )
    return record.state == IdempotencyKey.State.IN_FLIGHT and lock_expired


def _in_flight() -> ConflictError:
    return ConflictError(
        "A request with this Idempotency-Key is still in progress; retry shortly.",
        details={"Idempotency-Key": ["in flight"]},
        headers={"Retry-After": "1"},
    )


def _claim(*, user_id: int, key: str) -> tuple[bool, _Stored | None]:
    """In the caller's transaction: (whether we hold the key's lock, its stored row)."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [idempotency_lock_id(user_id=user_id, key=key), user_id, key])
        locked, pk, fingerprint, state, created_at, status, body = cursor.fetchone()
    if pk is None:
        return locked, None
    body = json.loads(body) if body is not None else None
    return locked, _Stored(pk, fingerprint, state, created_at, status, body)


def _execute_once(
    *, user_id: int, key: str, fingerprint: str, handler: Callable[[], tuple[int, Any]]
) -> tuple[StoredResponse, bool]:
    with transaction.atomic():
        locked, stored = _claim(user_id=user_id, key=key)
        now = timezone.now()
        if stored is not None and not _reclaimable(stored, now):
            if stored.fingerprint != fingerprint:
                raise UnprocessableError(
                    "This Idempotency-Key was already used with a different request body.",
                    details={"Idempotency-Key": ["reused with a different request"]},
                )
            if stored.state == IdempotencyKey.State.IN_FLIGHT:
                raise _in_flight()
            return StoredResponse(status=stored.status, body=stored.body), True
        if not locked:
            raise _in_flight()
        if stored is not None:
            # Expired: ours to replace (we hold the lock; the compare-and-set guards the rest).
            IdempotencyKey.objects.filter(pk=stored.pk, created_at=stored.created_at).delete()
        status, body = handler()
        with connection.cursor() as cursor:
            cursor.execute(
                _STORE_SQL,
                [
                    user_id,
                    key,
                    fingerprint,
                    IdempotencyKey.State.COMPLETED,
                    status,
                    json.dumps(body, cls=JSONEncoder),
                    now,
                ],
            )
            if cursor.rowcount != 1:
                raise _StoredMeanwhile  # undo the handler's writes; the answer is replayed
    return StoredResponse(status=status, body=body), False


def idempotent_execute(
    *, user, key: str, fingerprint: str, handler: Callable[[], tuple[int, Any]]
) -> tuple[StoredResponse, bool]:
    """Run `handler` at most once per (user, key, request), in one transaction with the stored
    answer; return (answer, replayed). 409 while another request holds the key, 422 when the
    key was used with another request."""
    for _ in range(3):
        try:
            return _execute_once(user_id=user.pk, key=key, fingerprint=fingerprint, handler=handler)
        except _StoredMeanwhile:
            continue
    raise ConflictError(
        "This Idempotency-Key is contended; retry shortly.", headers={"Retry-After": "1"}
    )


def idempotency_keys_purge(*, now: dt.datetime | None = None) -> int:
    """Delete keys past their retention; returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
