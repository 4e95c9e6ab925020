import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone

from common.testing import assert_error
from enrichment.models import EnrichmentJob, JobStatus, WorkerHeartbeat

pytestmark = pytest.mark.django_db

STATUS = "/api/v1/admin/enrichment-worker"
TRIGGER = "/api/v1/admin/enrichment-worker/trigger"
RETRY = "/api/v1/admin/enrichment-worker/retry-failed"


@pytest.mark.parametrize(("method", "url"), [("get", STATUS), ("post", TRIGGER), ("post", RETRY)])
def test_the_worker_endpoints_are_staff_only(anon, api, method, url):
    assert_error(getattr(anon, method)(url), 401)
    assert_error(getattr(api, method)(url), 403, "permission_denied")


def test_the_status_reports_queue_and_live_workers(staff_api, api):
    api.post("/api/v1/memories", {"textContent": "one"}, "json")
    api.post("/api/v1/memories", {"textContent": "two"}, "json")
    EnrichmentJob.objects.filter(pk=EnrichmentJob.objects.first().pk).update(
        status=JobStatus.FAILED, finished_at=timezone.now()
    )
    body = staff_api.get(STATUS).json()
    assert body["worker"]["isRunning"] is False
    assert body["worker"]["enabled"] is True
    assert body["worker"]["pollIntervalMs"] == 5000
    assert body["queue"] == {
        "pending": 1, "processing": 0, "deferred": 0, "deferredByReason": {},
        "completedToday": 0, "failedToday": 1,
    }  # fmt: skip

    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="w1@host", pid=42, started_at=now, last_seen=now)
    WorkerHeartbeat.objects.create(
        hostname="stale@host", pid=7, started_at=now, last_seen=now - timezone.timedelta(hours=1)
    )
    worker = staff_api.get(STATUS).json()["worker"]
    assert worker["isRunning"] is True
    assert [w["hostname"] for w in worker["liveWorkers"]] == ["w1@host"]


def test_it_runs_the_sweep_and_answers_the_reference_message(staff_api, api, monkeypatch):

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda n, args, queue, **kw: sent.append(1))
    api.post("/api/v1/memories", {"textContent": "x"}, "json")
    EnrichmentJob.objects.update(dispatched_at=None)
    body = staff_api.post(TRIGGER).json()
    # The reference's words exactly; the counts stay in their own keys.
    assert body["message"] == "Enrichment processing triggered"
    assert body["success"] is True and body["dispatched"] == 1 and sent == [1]
    assert body["requeued"] == 0 and body["enabled"] is True
    assert body["timestamp"]


def test_retry_failed_queues_failed_jobs_again(staff_api, api):
    api.post("/api/v1/memories", {"textContent": "x"}, "json")
    EnrichmentJob.objects.update(status=JobStatus.FAILED, finished_at=timezone.now())
    assert staff_api.post(RETRY).json()["retried"] == 1
    assert EnrichmentJob.objects.filter(status=JobStatus.PENDING).count() == 1


def test_stats_count_real_embeddings(staff_api, api, capsys):
    api.post("/api/v1/memories", {"textContent": "Dinner at the Italian place"}, "json")
    assert staff_api.get("/api/v1/admin/stats").json()["embeddings"] == 0
    call_command("enrich", "--inline")
    assert "1 completed" in capsys.readouterr().out
    assert staff_api.get("/api/v1/admin/stats").json()["embeddings"] == 1


def test_enrich_dry_run_and_status_commands(api, capsys):
    api.post("/api/v1/memories", {"textContent": "x"}, "json")
    call_command("enrich", "--dry-run")
    out = capsys.readouterr().out
    assert "would run job" in out and "1 job(s) due" in out
    assert EnrichmentJob.objects.get().status == JobStatus.PENDING
    call_command("enrichment_status")
    out = capsys.readouterr().out
    assert "1 pending" in out
    assert "Workers: none alive" in out
    assert "Budget breaker: closed" in out


def test_enrich_for_one_memory_and_retry_failed(api, capsys):
    memory_id = api.post("/api/v1/memories", {"textContent": "x"}, "json").json()["id"]
    EnrichmentJob.objects.update(status=JobStatus.FAILED, finished_at=timezone.now())
    call_command("enrich", "--memory", memory_id, "--retry-failed", "--inline")
    out = capsys.readouterr().out
    assert "Queued 1 failed job(s) again." in out
    assert "1 completed" in out


def test_the_status_lists_the_batch_api_batches(staff_api):
    import datetime as dt
    import uuid
    from decimal import Decimal

    from common.clock import today
    from costs.models import BudgetReservation
    from enrichment.models import AIBatch, AIBatchItem, BatchStatus

    batch = AIBatch.objects.create(
        status=BatchStatus.OPEN, model="text-embedding-3-small", provider_batch_id="batch_1",
        provider_status="in_progress", item_count=3, estimate_cents=Decimal("0.000150"),
    )  # fmt: skip
    for _ in range(3):  # each waiting memory holds its reservation until the batch ends
        held = BudgetReservation.objects.create(
            day=today(), amount_cents=Decimal("0.000050"), batch_api=True,
            expires_at=timezone.now() + dt.timedelta(hours=24),
        )  # fmt: skip
        AIBatchItem.objects.create(
            batch=batch, memory_id=uuid.uuid4(), text_hash="h", reservation_id=held.pk
        )
    AIBatch.objects.create(
        status=BatchStatus.FAILED, model="text-embedding-3-small", item_count=2,
        finished_at=timezone.now(),
    )  # fmt: skip
    body = staff_api.get(STATUS).json()["batchApi"]
    assert body["openItems"] == 3 and body["heldCents"] == 0.00015
    assert [(b["providerBatchId"], b["status"], b["items"]) for b in body["open"]] == [
        ("batch_1", "open", 3)
    ]
    assert [(b["status"], b["costCents"], b["outcomes"]) for b in body["recent"]] == [
        ("failed", 0.0, {})
    ]
