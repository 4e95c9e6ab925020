"""Fault injection with real parts: a private redis-server that we stop, Celery worker
processes that we SIGKILL, a gunicorn web server, a dropped database connection, and a provider
that fails for a while. Never the machine's shared Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import tokens_for_user
from costs.models import AICostRecord, BudgetReservation, DailyBudget
from enrichment import services
from enrichment.models import EnrichmentJob, JobStatus
from enrichment.testing import processes
from enrichment.tests.conftest import LOGS, wait_for
from memories import services as memories_services
from memories.models import Memory

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def post_memory(port: int, token: str, text: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - our own server on loopback
        f"http://127.0.0.1:{port}/api/v1/memories",
        data=json.dumps({"textContent": text}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def all_enriched(count: int) -> bool:
    return Memory.objects.filter(enrichment_status="enriched").count() >= count


def test_redis_stopping_during_a_burst_loses_nothing_and_doubles_nothing(
    process_env, private_redis, started, openai_stub, user
):
    env = {**process_env, "REDIS_URL": private_redis.url}
    port = processes.free_port()
    started(processes.gunicorn(env, port=port, log=LOGS / "faults-web.log"))
    token = tokens_for_user(user)["accessToken"]

    statuses = []
    for i in range(30):
        if i == 10:
            private_redis.stop()  # the broker dies mid-burst
        statuses.append(post_memory(port, token, f"burst memory {i}"))
    assert statuses == [201] * 30
    assert Memory.objects.count() == 30
    undispatched = EnrichmentJob.objects.filter(dispatched_at__isnull=True).count()
    assert undispatched >= 20  # every create after the outage left its job for the sweep

    # Redis kept nothing on disk: the 10 tasks sent before the outage died with it. Their jobs
    # look "in flight" until ENRICHMENT_REDISPATCH_SECONDS, then the sweep sends them again.
    private_redis.start()
    env["ENRICHMENT_REDISPATCH_SECONDS"] = "2"
    started(processes.celery_worker(env, name="after-outage", log=LOGS / "faults-worker.log"))

    def sweep_until_done() -> bool:
        processes.manage(env, "enrich")  # the sweep, as beat runs it every few seconds
        return all_enriched(30)

    wait_for(sweep_until_done, timeout=120, interval=1, what="all 30 memories enriched")

    assert EnrichmentJob.objects.filter(status=JobStatus.COMPLETED).count() == 30
    assert AICostRecord.objects.count() == 60  # two calls per memory, none twice
    # One classification per memory; embeddings go in batches, each memory's text once.
    assert len(openai_stub.calls_to("/v1/chat/completions")) == 30
    assert sorted(openai_stub.embedded_texts()) == sorted(f"burst memory {i}" for i in range(30))


def test_a_worker_killed_mid_job_leaves_a_job_that_completes_once(
    process_env, private_redis, started, openai_stub, user, monkeypatch
):
    env = {
        **process_env,
        "REDIS_URL": private_redis.url,
        "ENRICHMENT_LEASE_SECONDS": "3",
        "AI_RESERVATION_TIMEOUT_SECONDS": "3",
    }
    with monkeypatch.context() as patch:
        # Only this test's worker processes may run the job (their sweep sends it), never the
        # session's in-process worker on the shared broker.
        patch.setattr(services, "job_dispatch", lambda **kwargs: False)
        with services.transaction.atomic():
            memory = services.Memory.objects.create(user=user, text_content="Killed mid-call")
            job = services.job_create_for_memory(memory=memory)
    EnrichmentJob.objects.filter(pk=job.pk).update(dispatched_at=None)

    openai_stub.state.slow_seconds = 60
    openai_stub.script(["slow"])  # the first call hangs: the worker is mid-job
    first = started(processes.celery_worker(env, name="doomed", log=LOGS / "faults-kill.log"))
    processes.manage(env, "enrich")
    wait_for(
        lambda: (
            EnrichmentJob.objects.filter(pk=job.pk, status=JobStatus.PROCESSING).exists()
            and len(openai_stub.calls) == 1
        ),
        timeout=60,
        what="the worker to be inside the provider call",
    )
    assert BudgetReservation.objects.filter(state="active").count() == 1
    first.kill()  # SIGKILL the whole worker, children included

    job.refresh_from_db()
    wait_for(lambda: timezone.now() > job.lease_expires_at, timeout=10, what="lease expiry")
    wait_for(
        lambda: timezone.now() > BudgetReservation.objects.get().expires_at,
        timeout=10,
        what="reservation expiry",
    )
    started(processes.celery_worker(env, name="replacement", log=LOGS / "faults-kill.log"))
    processes.manage(env, "enrich")  # re-queues the expired lease, charges the reservation
    wait_for(lambda: all_enriched(1), timeout=60, what="the job to complete")

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts == 2
    # The killed call may have been billed by the provider: its expired reservation is charged
    # at its estimate as an unreconciled row; the re-run's two calls are exact.
    rows = sorted(AICostRecord.objects.values_list("operation", "reconciled"))
    assert rows == [("classification", False), ("classification", True), ("embedding", True)]
    assert BudgetReservation.objects.filter(state="active").count() == 0
    row = DailyBudget.objects.get()
    assert row.reserved_cents == 0
    assert row.spent_cents == sum(AICostRecord.objects.values_list("cost_cents", flat=True))


@pytest.mark.postgres
def test_a_database_connection_dropped_mid_request_is_a_clean_503(api, user, monkeypatch):

    original = memories_services.usage_record_memory_created

    def drop_then_continue(**kwargs):
        original(**kwargs)  # a write inside the request's transaction...
        pid = connection.connection.info.backend_pid
        import psycopg

        db = connection.settings_dict
        with psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
            dbname=db["NAME"], autocommit=True,
        ) as admin:  # fmt: skip
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # ...then the link dies

    monkeypatch.setattr("memories.services.usage_record_memory_created", drop_then_continue)
    response = api.post("/api/v1/memories", {"textContent": "never half-written"}, "json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"]
    connection.close()
    assert Memory.objects.count() == 0
    assert EnrichmentJob.objects.count() == 0
    from costs.models import UserUsage

    assert not UserUsage.objects.filter(memories_created__gt=0).exists()


def test_a_provider_failing_for_a_while_only_delays_the_work(
    use_openai, celery_worker, user, settings
):
    settings.ENRICHMENT_RETRY_BASE_SECONDS = 0.05
    settings.ENRICHMENT_RETRY_MAX_SECONDS = 0.2
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 1000
    settings.ENRICHMENT_MAX_ATTEMPTS = 5
    use_openai.script(["429", "500", "429", "500", "500", "429"])
    api_memories = []
    for i in range(3):
        with services.transaction.atomic():
            memory = services.Memory.objects.create(user=user, text_content=f"flaky {i}")
            services.job_create_for_memory(memory=memory)
        api_memories.append(memory.pk)

    def sweep_and_check():
        services.jobs_sweep()
        return all_enriched(3)

    wait_for(sweep_and_check, timeout=60, interval=0.1, what="every job to finish")
    jobs = list(EnrichmentJob.objects.all())
    assert all(j.status == JobStatus.COMPLETED for j in jobs)
    assert all(j.attempts <= settings.ENRICHMENT_MAX_ATTEMPTS for j in jobs)
    # One retry per 500; a 429 waits its Retry-After without using an attempt.
    assert sum(j.attempts for j in jobs) == 3 + 3
    answered = [c for c in use_openai.calls if c["answer"] == "ok"]
    assert len(use_openai.calls) - len(answered) == 6  # every scripted failure was met once
    # ...then each memory is classified once and embedded once (embeddings may share a request).
    assert len([c for c in answered if c["path"] == "/v1/chat/completions"]) == 3
    embedded = [c["body"]["input"] for c in answered if c["path"] == "/v1/embeddings"]
    assert sorted(t for i in embedded for t in (i if isinstance(i, list) else [i])) == [
        f"flaky {i}" for i in range(3)
    ]
    assert AICostRecord.objects.count() == 6


def _other_backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_a_worker_keeps_its_database_connection_and_replaces_a_dropped_one(
    process_env, started, openai_stub, user, monkeypatch
):
    """Celery's Django fixup would close the connection around every task; with
    CELERY_DB_REUSE_MAX the worker keeps it, checks it before each task (CONN_HEALTH_CHECKS)
    and replaces one the server dropped, without failing the task that finds it dead."""
    env = {**process_env, "TEST_CONN_MAX_AGE": "600"}
    monkeypatch.setattr(services, "job_dispatch", lambda **kwargs: False)  # only our worker runs

    def enrich(text: str) -> EnrichmentJob:
        with services.transaction.atomic():
            memory = services.Memory.objects.create(user=user, text_content=text)
            job = services.job_create_for_memory(memory=memory)
        EnrichmentJob.objects.filter(pk=job.pk).update(dispatched_at=None)
        processes.manage(env, "enrich")  # the sweep sends it to the worker
        wait_for(
            lambda: Memory.objects.filter(pk=memory.pk, enrichment_status="enriched").exists(),
            timeout=60,
            what=f"{text!r} enriched",
        )
        return EnrichmentJob.objects.get(pk=job.pk)

    started(processes.celery_worker(env, name="keeper", log=LOGS / "faults-connections.log"))
    enrich("first note")
    kept = _other_backends()
    assert kept  # the worker's connections, still open between tasks
    for i in range(3):
        enrich(f"note {i}")
    assert _other_backends() == kept  # the same connections: none opened, none closed

    with connection.cursor() as cursor:  # the server drops them (a restart, a failover)
        for pid in kept:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(lambda: not (_other_backends() & kept), timeout=10, what="the backends to end")
    job = enrich("after the drop")
    assert job.status == JobStatus.COMPLETED and job.attempts == 1  # no attempt was lost
    assert not (_other_backends() & kept)
