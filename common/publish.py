"""Sending Celery task messages: one, many over one broker connection, or one once the current
transaction commits. A broker outage never fails the caller: it is logged (without the broker's
address, which may hold a password) and reported by the return value, so the caller can leave
the work for its own recovery (the enrichment sweep sends waiting jobs again)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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
    the savepoint around this call, rolls back). If the broker is unreachable, `on_failure()` is
    called, after the commit, outside any transaction; an exception it raises is logged."""

    def publish() -> None:
        if not task_publish(name, args, queue, countdown, app=app) and on_failure is not None:
            on_failure()

    transaction.on_commit(publish, using=using, robust=True)
