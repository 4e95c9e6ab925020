"""Pipeline fixtures: the OpenAI stub server, provider settings, a real Celery worker."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from enrichment.providers import reset_provider_cache
from enrichment.testing.openai_stub import OpenAIStub
from memoryconnector.celery import app as celery_app

FAKE_KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def openai_stub():
    stub = OpenAIStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def use_openai(settings, openai_stub):
    """Point the real `openai` client at the stub."""
    settings.AI_PROVIDER = "openai"
    settings.OPENAI_API_KEY = FAKE_KEY
    settings.OPENAI_BASE_URL = openai_stub.base_url
    settings.OPENAI_TIMEOUT_SECONDS = 1.0
    settings.EMBEDDING_DIMENSIONS = 16  # small vectors: the stub answers the size it is asked
    reset_provider_cache()
    yield openai_stub
    reset_provider_cache()


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Await a condition (polling); fail with `what` if it does not come within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def _purge_queues() -> None:
    with celery_app.connection_for_write() as conn:
        for queue in ("enrichment", "maintenance"):
            conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(queue)


@pytest.fixture(scope="session")
def _session_worker(django_db_setup):
    """One real Celery worker (threads) for the session, consuming the configured broker:
    Redis in CI (REDIS_URL), kombu's in-memory transport otherwise."""
    _purge_queues()
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        # The session's worker must not look like a live worker to the health-rule tests that
        # run after it: stop its heartbeat (and remove its row).
        from enrichment.worker import HeartbeatStep

        for step in worker.steps:
            if isinstance(step, HeartbeatStep):
                step.stop(worker)
        yield worker


@pytest.fixture
def celery_worker(_session_worker, transactional_db):
    """The session's worker, with committed data it can see and an empty queue."""
    _purge_queues()
    yield _session_worker
