"""Sending Celery task messages: one, many over one broker connection, or one once the current
transaction commits (sent then, or with the others of a `publishes_batched()` block when the
block ends). A broker outage never fails the caller: it is logged (without the broker's address,
which may hold a password) and reported by the return value or `on_failure`, so the caller can
leave the work for its own recovery (the enrichment sweep sends waiting jobs again)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby

from celery import Celery, current_app
from django.db import transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskMessage:
    """A task to send: its registered name, positional args, queue and an optional delay."""

    name: str
    args: Sequence = ()
    queue: str | None = None
    countdown: float | None = None


# Messages per broker round trip (kombu's publish batch: one Redis pipeline per chunk).
CHUNK = 100


def tasks_publish(messages: Iterable[TaskMessage], *, app: Celery | None = None) -> int:
    """Send `messages` in order through one producer (one pooled broker connection), batched
    (on Redis, one pipeline per CHUNK messages); return how many were sent. At a broker failure
    it stops and logs: the messages from that index on were not sent (`messages[sent:]`). A
    chunk counts as sent only once it is flushed, so a failure never hides an unsent message
    (at worst a message is sent again, which every task here tolerates)."""
    app = app or current_app
    messages = list(messages)
    sent = 0
    if not messages:
        return 0
    try:
        with app.producer_or_acquire() as producer:
            for start in range(0, len(messages), CHUNK):
                chunk = messages[start : start + CHUNK]
                with producer.batch():
                    for message in chunk:
                        options = {"countdown": message.countdown} if message.countdown else {}
                        app.send_task(
                            message.name,
                            args=list(message.args),
                            queue=message.queue,
                            producer=producer,
                            **options,
                        )
                sent += len(chunk)
    except Exception as exc:  # noqa: BLE001 - any broker failure means "not sent, tell the caller"
        logger.warning(
            "broker unreachable: %d of %d task message(s) not sent, the first %s (%s)",
            len(messages) - sent,
            len(messages),
            messages[sent].name,
            type(exc).__name__,
        )
    return sent


def task_publish(
    name: str,
    args: Sequence,
    queue: str | None,
    countdown: float | None = None,
    *,
    app: Celery | None = None,
) -> bool:
    """Send one task message through the pooled producer; False (logged) if the broker is
    unreachable."""
    return tasks_publish([TaskMessage(name, args, queue, countdown)], app=app) == 1


@dataclass(frozen=True)
class _Deferred:
    message: TaskMessage
    app: Celery | None
    on_failure: Callable[[], object] | None


_batching = threading.local()  # .pending: the _Deferred of this thread's open batch, or None


def task_publish_on_commit(
    name: str,
    args: Sequence,
    queue: str | None,
    countdown: float | None = None,
    *,
    on_failure: Callable[[], object] | None = None,
    app: Celery | None = None,
    using: str | None = None,
) -> None:
    """Send the task once the current transaction commits (at once outside one; never if it, or
    the savepoint around this call, rolls back); inside a `publishes_batched()` block, when the
    block ends. If the broker is unreachable, `on_failure()` is called, after the commit,
    outside any transaction; an exception it raises is logged."""
    deferred = _Deferred(TaskMessage(name, args, queue, countdown), app, on_failure)

    def publish() -> None:
        pending = getattr(_batching, "pending", None)
        if pending is not None:
            pending.append(deferred)
        else:
            _publish_deferred([deferred])

    transaction.on_commit(publish, using=using, robust=True)


@contextmanager
def publishes_batched() -> Iterator[None]:
    """The messages `task_publish_on_commit` would send in this thread while the block runs (the
    commits inside it) are sent together when it ends — over one producer, one Redis pipeline
    per CHUNK — instead of one broker round trip each; also when the block ends by an
    exception (what committed is sent). An inner block belongs to the outermost one."""
    if getattr(_batching, "pending", None) is not None:
        yield
        return
    _batching.pending = pending = []
    try:
        yield
    finally:
        _batching.pending = None
        _publish_deferred(pending)


def _publish_deferred(deferred: list[_Deferred]) -> None:
    """Send the messages (one producer per app, in order); call each unsent one's on_failure,
    logging (never raising) what a callback raises."""
    for app, group in groupby(deferred, key=lambda item: item.app):
        group = list(group)
        sent = tasks_publish([item.message for item in group], app=app)
        for item in group[sent:]:
            if item.on_failure is None:
                continue
            try:
                item.on_failure()
            except Exception:
                logger.exception("on_failure of an unsent %s task failed", item.message.name)
