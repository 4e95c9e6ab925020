"""The pipeline end to end with a real Celery worker, the real openai client and the stub."""

from __future__ import annotations

from decimal import Decimal

import pytest
from celery import current_app
from django.db.models import Sum

from conftest import client_for
from costs.models import AICostRecord
from costs.pricing import cost_compute
from enrichment import services
from enrichment.models import EnrichmentJob, JobStatus
from enrichment.providers.metered import metered_call
from enrichment.tests.conftest import wait_for
from memories.models import Embedding, Memory
from memoryconnector.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


def enriched(memory_id):
    memory = Memory.objects.get(pk=memory_id)
    return memory if memory.enrichment_status == "enriched" else None


def test_a_posted_memory_is_enriched_by_the_worker_and_its_cost_recorded(
    use_openai, celery_worker, make_user
):
    user = make_user("e2e@example.com")
    api = client_for(user)
    response = api.post(
        "/api/v1/memories", {"textContent": "Dentist appointment on Monday"}, "json"
    )
    assert response.status_code == 201
    memory_id = response.json()["id"]

    memory = wait_for(lambda: enriched(memory_id), what="the memory to be enriched")
    assert memory.category == "health"
    assert memory.enriched_at is not None
    body = api.get(f"/api/v1/memories/{memory_id}").json()
    assert body["enrichmentStatus"] == "enriched" and body["category"] == "health"
    embedding = Embedding.objects.get(memory_id=memory_id)
    assert embedding.dimensions == 16 and len(embedding.vector) == 16
    assert EnrichmentJob.objects.get(memory_id=memory_id).status == JobStatus.COMPLETED

    records = {r.operation: r for r in AICostRecord.objects.filter(memory_id=memory_id)}
    assert set(records) == {"classification", "embedding"}
    chat_body = use_openai.calls_to("/v1/chat/completions")
    assert len(chat_body) == 1 and len(use_openai.calls_to("/v1/embeddings")) == 1
    for record in records.values():
        assert isinstance(record.cost_cents, Decimal)
        assert record.cost_cents == cost_compute(
            provider="openai",
            model=record.model,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cached_tokens=record.cached_tokens,
        )
        assert record.user_id == user.pk
    assert records["embedding"].output_tokens == 0


def test_the_same_job_delivered_twice_calls_the_provider_once(use_openai, celery_worker, user):
    with services.transaction.atomic():
        memory = Memory.objects.create(user=user, text_content="Buy oat milk")
        job = services.job_create_for_memory(memory=memory)
    for _ in range(3):
        celery_app.send_task(services.PROCESS_TASK, args=[job.pk], queue=services.Queue.ENRICHMENT)
    wait_for(lambda: enriched(memory.pk), what="enrichment")
    # Let every extra delivery be consumed before counting.
    wait_for(lambda: not _queue_has_messages(), what="the queue to drain")
    assert len(use_openai.calls_to("/v1/chat/completions")) == 1
    assert len(use_openai.calls_to("/v1/embeddings")) == 1
    assert AICostRecord.objects.filter(memory_id=memory.pk).count() == 2


def _queue_has_messages() -> bool:
    with celery_app.connection_for_write() as conn:
        _, count, _ = conn.default_channel.queue_declare(
            queue=services.Queue.ENRICHMENT, durable=True, auto_delete=False
        )
    if count:
        return True
    return EnrichmentJob.objects.filter(status=JobStatus.PROCESSING).exists()


def test_a_job_whose_worker_died_runs_again_once_and_the_ledger_stays_honest(
    use_openai, celery_worker, user
):
    """A worker claimed the job, paid for the classification, then died: its lease expires,
    the sweep hands the job out again, and the re-run does not classify (or pay) twice."""
    from django.utils import timezone

    with services.transaction.atomic():
        memory = Memory.objects.create(user=user, text_content="Pay the rent")
        job = services.job_create_for_memory(memory=memory)
    # Simulate the dead worker: it claimed the job and finished the classification step.
    EnrichmentJob.objects.filter(pk=job.pk).update(dispatched_at=timezone.now())
    assert services._claim_batch(job_ids=[job.pk], more=False, limit=1, worker="dead-worker")
    dead = EnrichmentJob.objects.get(pk=job.pk)
    provider = services.get_provider()
    metered_call(
        provider=provider,
        operation="classification",
        model=provider.classification_model,
        estimate=provider.estimate_classification_tokens(memory.text_content),
        call=lambda: provider.classify(memory.text_content),
        user_id=user.pk,
        memory_id=memory.pk,
        counts_enrichment=True,
    )
    services._ours(dead).update(
        classification={"category": "finance", "tags": ["rent"]}, usage_counted=True
    )
    EnrichmentJob.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )

    result = services.jobs_sweep()
    assert result.requeued == 1 and result.dispatched == 1
    memory = wait_for(lambda: enriched(memory.pk), what="the re-run")
    assert memory.category == "finance"
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts == 2
    assert len(use_openai.calls_to("/v1/chat/completions")) == 1
    ops = list(AICostRecord.objects.filter(memory_id=memory.pk).values_list("operation", flat=True))
    assert sorted(ops) == ["classification", "embedding"]


def test_a_memory_created_while_the_broker_is_down_is_enriched_by_the_sweep(
    celery_worker, user, monkeypatch
):
    """The publish fails as kombu fails when Redis is down (the fault suite stops a real
    Redis); the API still answers 201 and the sweep enriches the memory later."""
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    api = client_for(user)
    with monkeypatch.context() as patch:
        patch.setattr(current_app, "send_task", broker_down)
        response = api.post("/api/v1/memories", {"textContent": "Broker is down"}, "json")
    assert response.status_code == 201
    memory_id = response.json()["id"]
    job = EnrichmentJob.objects.get(memory_id=memory_id)
    assert job.status == JobStatus.PENDING and job.dispatched_at is None

    assert services.jobs_sweep().dispatched == 1
    wait_for(lambda: enriched(memory_id), what="the sweep to get the job enriched")


def test_with_processing_disabled_nothing_is_processed_and_nothing_lost(
    celery_worker, user, settings
):
    settings.ENRICHMENT_WORKER_ENABLED = False
    api = client_for(user)
    ids = [
        api.post("/api/v1/memories", {"textContent": f"note {i}"}, "json").json()["id"]
        for i in range(3)
    ]
    # Each delivery reaches a worker that declines it, leaving the job for a later sweep.
    wait_for(
        lambda: EnrichmentJob.objects.filter(dispatched_at__isnull=True).count() == 3,
        what="every delivery to be declined",
    )
    assert services.jobs_sweep().dispatched == 0
    assert set(Memory.objects.values_list("enrichment_status", flat=True)) == {"pending"}
    assert AICostRecord.objects.count() == 0

    settings.ENRICHMENT_WORKER_ENABLED = True
    assert services.jobs_sweep().dispatched == 3
    for memory_id in ids:
        wait_for(lambda memory_id=memory_id: enriched(memory_id), what="enrichment")
    assert EnrichmentJob.objects.filter(status=JobStatus.COMPLETED).count() == 3


def test_the_ledger_sum_matches_the_daily_budget(use_openai, celery_worker, user):
    from costs import selectors as cost_selectors

    api = client_for(user)
    ids = [
        api.post("/api/v1/memories", {"textContent": f"Meeting about project {i}"}, "json").json()[
            "id"
        ]
        for i in range(5)
    ]
    for memory_id in ids:
        wait_for(lambda memory_id=memory_id: enriched(memory_id), what="enrichment")
    ledger = AICostRecord.objects.aggregate(total=Sum("cost_cents"))["total"]
    spend = cost_selectors.ai_cost_tracking()["dailySpend"]
    assert Decimal(str(spend["totalCents"])) == ledger
    assert spend["operationCount"] == 10


def test_it_counts_a_memory_queued_while_the_breaker_is_open_as_pending(
    celery_worker, make_user, staff_api
):
    """The reference's "Test Scenario 2": breaker open, a memory created through the API, the
    worker status says `"pending": 1` (queued but not processing), with the breakdown beside."""
    from common.clock import next_reset

    assert staff_api.post("/api/v1/admin/circuit-breaker/pause").status_code == 200
    assert staff_api.get("/api/v1/admin/circuit-breaker").json()["state"] == "open"
    api = client_for(make_user("scenario2@example.com"))
    response = api.post("/api/v1/memories", {"textContent": "Should be queued"}, "json")
    assert response.status_code == 201

    # The real worker picks the job up, finds the breaker open and defers it to the reset.
    job = wait_for(
        lambda: EnrichmentJob.objects.filter(
            memory_id=response.json()["id"], status=JobStatus.DEFERRED
        ).first(),
        what="the worker to defer the job",
    )
    assert job.deferred_reason == "budget_paused" and job.not_before == next_reset()

    queue = staff_api.get("/api/v1/admin/enrichment-worker").json()["queue"]
    assert queue == {
        "pending": 1,
        "processing": 0,
        "deferred": 1,
        "deferredByReason": {
            "budget_paused": {"count": 1, "until": next_reset().isoformat().replace("+00:00", "Z")}
        },
        "completedToday": 0,
        "failedToday": 0,
    }
    assert AICostRecord.objects.count() == 0
