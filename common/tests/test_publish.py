"""common.publish against a real Redis broker: what lands in the queue, one producer for many
messages, and a broker that is down (a closed port, a private Redis stopped and started)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import transaction

from common import publish
from common.publish import (
    TaskMessage,
    publishes_batched,
    task_publish,
    task_publish_on_commit,
    tasks_publish,
)
from enrichment.testing import processes

TASK = "common.tests.publish_probe"  # never run: the messages are read back from Redis


def app_for(broker_url: str | None = None) -> Celery:
    """A Celery app with the project's CELERY_* settings, on `broker_url` when given, and the
    production settings' publish retry policy for Redis (one quick retry, not kombu's 2 s)."""
    app = Celery("publish-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    if broker_url is not None:
        app.conf.broker_url = broker_url
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        **settings.BROKER_PUBLISH_RETRY,
    }
    return app


@pytest.fixture
def app():
    app = app_for()
    yield app
    app.close()


@pytest.fixture
def queue(app):
    """A queue of this test's own, deleted afterwards."""
    name = f"publish-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(app.conf.broker_url)
    prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
    client.delete(f"{prefix}{name}", f"{prefix}_kombu.binding.{name}")


def queued(app: Celery, queue: str) -> list[dict]:
    """The messages waiting in `queue`, oldest first: {task, args, eta}."""
    client = redis.Redis.from_url(app.conf.broker_url)
    prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
    messages = []
    for raw in reversed(client.lrange(f"{prefix}{queue}", 0, -1)):  # LPUSH puts the newest first
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        headers = envelope["headers"]
        messages.append({"task": headers["task"], "args": args, "eta": headers["eta"]})
    return messages


class _RollBack(Exception):
    pass


def rolled_back(send) -> None:
    """Call `send` in an atomic block (a savepoint when nested) that then rolls back."""
    with contextlib.suppress(_RollBack), transaction.atomic():
        send()
        raise _RollBack


def closed_port_url() -> str:
    port = processes.free_port()  # bound and released: nothing listens there
    return f"redis://127.0.0.1:{port}/0"


pytestmark = pytest.mark.redis


def test_it_sends_one_task_to_its_queue(app, queue):
    assert task_publish(TASK, [7, "x"], queue, app=app) is True
    assert queued(app, queue) == [{"task": TASK, "args": [7, "x"], "eta": None}]


def test_a_countdown_becomes_the_messages_eta(app, queue):
    assert task_publish(TASK, [1], queue, countdown=30, app=app)
    [message] = queued(app, queue)
    assert message["eta"] is not None


def test_many_messages_go_in_order_through_one_producer(app, queue, monkeypatch):
    acquired = []
    acquire = app.producer_pool.acquire
    monkeypatch.setattr(
        app.producer_pool, "acquire", lambda *a, **kw: acquired.append(1) or acquire(*a, **kw)
    )
    messages = [TaskMessage(TASK, [n], queue) for n in range(5)]
    assert tasks_publish(messages, app=app) == 5
    assert [m["args"] for m in queued(app, queue)] == [[0], [1], [2], [3], [4]]
    assert len(acquired) == 1
    assert tasks_publish([], app=app) == 0


def test_many_messages_go_in_one_redis_pipeline_per_chunk(app, queue, monkeypatch):
    pushes = pipelines_pushing(monkeypatch)
    count = 2 * publish.CHUNK + 5
    assert tasks_publish([TaskMessage(TASK, [n], queue) for n in range(count)], app=app) == count
    assert [m["args"][0] for m in queued(app, queue)] == list(range(count))
    assert [n for n in pushes if n] == [publish.CHUNK, publish.CHUNK, 5]


def test_a_broker_outage_is_logged_and_answered_false_never_raised(caplog):
    url = closed_port_url()
    app = app_for(url)
    try:
        with caplog.at_level(logging.WARNING, logger="common.publish"):
            assert task_publish(TASK, [1], "anything", app=app) is False
            messages = [TaskMessage(TASK, [n], "anything") for n in range(3)]
            assert tasks_publish(messages, app=app) == 0
    finally:
        app.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "common.publish"]
    assert len(warnings) == 2
    assert "3 of 3 task message(s) not sent" in warnings[1] and TASK in warnings[1]
    assert not any(url.split("//")[1] in text for text in warnings)  # the address stays out


@pytest.mark.faults
def test_publishing_fails_while_the_broker_is_down_and_recovers_when_it_returns(private_redis):
    app = app_for(private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert task_publish(TASK, [1], "q", app=app)
        private_redis.stop()
        assert task_publish(TASK, [2], "q", app=app) is False
        assert tasks_publish([TaskMessage(TASK, [3], "q")], app=app) == 0
        private_redis.start()  # empty: the server keeps nothing on disk
        assert tasks_publish([TaskMessage(TASK, [n], "q") for n in (4, 5)], app=app) == 2
        assert [m["args"] for m in queued(app, "q")] == [[4], [5]]
    finally:
        client.close()
        app.close()


@pytest.mark.django_db(transaction=True)
def test_on_commit_it_sends_after_the_commit_and_never_for_a_rollback(app, queue):
    with transaction.atomic():
        task_publish_on_commit(TASK, ["committed"], queue, app=app)
        assert queued(app, queue) == []  # not before the commit
        rolled_back(lambda: task_publish_on_commit(TASK, ["rolled back savepoint"], queue, app=app))
    rolled_back(lambda: task_publish_on_commit(TASK, ["rolled back"], queue, app=app))
    task_publish_on_commit(TASK, ["autocommit"], queue, app=app)  # no transaction: at once
    assert [m["args"] for m in queued(app, queue)] == [["committed"], ["autocommit"]]


@pytest.mark.django_db(transaction=True)
def test_on_commit_a_broker_outage_calls_on_failure_after_the_commit(caplog):
    app = app_for(closed_port_url())
    failures = []
    try:
        with transaction.atomic():
            task_publish_on_commit(TASK, [1], "q", app=app, on_failure=lambda: failures.append(1))
            task_publish_on_commit(TASK, [2], "q", app=app)  # no callback: only logged
            assert failures == []
        assert failures == [1]

        def broken() -> None:
            raise ValueError("on_failure failed")

        with caplog.at_level(logging.ERROR, logger="common.publish"):
            with transaction.atomic():
                task_publish_on_commit(TASK, [3], "q", app=app, on_failure=broken)
        # A failing callback is logged; the caller never sees it.
        [logged] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert TASK in logged.getMessage() and "ValueError: on_failure failed" in caplog.text
    finally:
        app.close()


def pipelines_pushing(monkeypatch) -> list[int]:
    """Per Redis pipeline executed from now on: how many messages it pushed."""
    pushes: list[int] = []
    execute = redis.client.Pipeline.execute

    def counting_execute(self, *args, **kwargs):
        pushes.append(sum(1 for command in self.command_stack if command[0][0] == "LPUSH"))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    return pushes


@pytest.mark.django_db(transaction=True)
def test_a_batch_sends_what_its_commits_queued_together_when_it_ends(app, queue, monkeypatch):
    pushes = pipelines_pushing(monkeypatch)
    with publishes_batched():
        with transaction.atomic():
            for n in range(5):
                task_publish_on_commit(TASK, [n], queue, app=app)
            rolled_back(
                lambda: task_publish_on_commit(TASK, ["rolled back savepoint"], queue, app=app)
            )
        rolled_back(lambda: task_publish_on_commit(TASK, ["rolled back"], queue, app=app))
        with publishes_batched():  # an inner block belongs to the outer one
            with transaction.atomic():
                task_publish_on_commit(TASK, [5], queue, app=app)
        assert queued(app, queue) == []  # committed, but the block has not ended
    assert [m["args"] for m in queued(app, queue)] == [[n] for n in range(6)]
    assert [n for n in pushes if n] == [6]  # one round trip for all six


@pytest.mark.django_db(transaction=True)
def test_a_batch_ended_by_an_error_still_sends_what_committed(app, queue):
    with pytest.raises(ValueError, match="after the commit"):
        with publishes_batched():
            with transaction.atomic():
                task_publish_on_commit(TASK, ["committed"], queue, app=app)
            raise ValueError("after the commit")
    assert [m["args"] for m in queued(app, queue)] == [["committed"]]
    task_publish_on_commit(TASK, ["after the block"], queue, app=app)  # at once again
    assert [m["args"] for m in queued(app, queue)] == [["committed"], ["after the block"]]


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_broker_refuses_calls_every_on_failure():
    app = app_for(closed_port_url())
    failures = []
    try:
        with publishes_batched(), transaction.atomic():
            for n in range(3):
                task_publish_on_commit(
                    TASK, [n], "q", app=app, on_failure=lambda n=n: failures.append(n)
                )
    finally:
        app.close()
    assert failures == [0, 1, 2]
