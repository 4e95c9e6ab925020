"""Pipeline fixtures for the whole suite (registered once by the root conftest): the OpenAI stub
server, provider settings, a real Celery worker, and the environment for our own web, worker and
beat processes."""

from __future__ import annotations

import faulthandler
import time
import warnings

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings

from enrichment.providers import reset_provider_cache
from enrichment.testing import processes
from enrichment.testing.openai_stub import OpenAIStub
from memoryconnector.celery import app as celery_app

# Logs of the processes the tests start (kept as CI artifacts).
LOGS = django_settings.BASE_DIR / "test-results"

FAKE_KEY = "sk-test-0123456789abcdef"
# The session worker's enrichment queue: only tests that ask for `celery_worker` send jobs
# there, so jobs of other tests are never run behind their back (say, during their flush).
SESSION_WORKER_QUEUE = "enrichment-session-worker"


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
        for queue in ("enrichment", SESSION_WORKER_QUEUE, "maintenance"):
            conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(queue)


@pytest.fixture(scope="session")
def _session_worker(django_db_setup):
    """One real Celery worker (threads) for the session, consuming the configured broker:
    Redis in CI (REDIS_URL), kombu's in-memory transport otherwise."""
    _purge_queues()
    stacks_path = LOGS / "session-worker-shutdown-stacks.txt"
    stacks = None
    try:
        with start_worker(
            celery_app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            queues=[SESSION_WORKER_QUEUE, "maintenance"],
            loglevel="WARNING",
            # Long enough for a provider call in flight to time out (OPENAI_TIMEOUT_SECONDS).
            shutdown_timeout=90,
        ) as worker:
            # The session's worker must not look like a live worker to the health-rule tests
            # that run after it: stop its heartbeat (and remove its row).
            from enrichment.worker import HeartbeatStep

            for step in worker.steps:
                if isinstance(step, HeartbeatStep):
                    step.stop(worker)
            yield worker
            # Should the shutdown hang, every thread's stack is left in test-results.
            LOGS.mkdir(exist_ok=True)
            stacks = stacks_path.open("w")
            faulthandler.dump_traceback_later(45, file=stacks)
    except RuntimeError as exc:
        # Every test has run and passed by now; a worker thread still busy after them (its
        # stacks are in the file) must not turn the run red, but it is reported.
        warnings.warn(f"{exc} (thread stacks: {stacks_path})", pytest.PytestWarning, stacklevel=1)
    finally:
        faulthandler.cancel_dump_traceback_later()
        if stacks is not None:
            stacks.close()


@pytest.fixture
def celery_worker(_session_worker, transactional_db, monkeypatch):
    """The session's worker, with committed data it can see and an empty queue; this test's
    jobs are sent to it."""
    from enrichment.services import Queue

    _purge_queues()
    monkeypatch.setattr(Queue, "ENRICHMENT", SESSION_WORKER_QUEUE)
    yield _session_worker


# --- real processes (enrichment.testing.processes) -------------------------------------------


@pytest.fixture
def process_env(openai_stub):
    """Environment for our web and worker processes (enrichment.testing.processes.django_env);
    the broker is set per test."""
    LOGS.mkdir(exist_ok=True)
    return processes.django_env(openai_base_url=openai_stub.base_url)


@pytest.fixture
def started():
    """Processes a test starts; all stopped (before the database is flushed)."""
    running: list[processes.Process] = []

    def start(process: processes.Process) -> processes.Process:
        running.append(process)
        return process.start()

    yield start
    for process in reversed(running):
        process.stop()
