"""The budget at its edges, through a real Celery worker, the real openai client and the stub:
exhaustion below 100 %, work put back at once on resume, and rate limits that are not outages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from alerting.models import Alert
from common.clock import next_reset
from conftest import client_for
from costs.models import AICostRecord, DailyBudget, ProviderBreaker
from enrichment.models import EnrichmentJob, JobStatus
from enrichment.tests.conftest import wait_for
from memories.models import Memory

pytestmark = pytest.mark.django_db(transaction=True)

WAITING_OR_RUNNING = (JobStatus.PENDING, JobStatus.PROCESSING)


def post(api, text: str) -> str:
    response = api.post("/api/v1/memories", {"textContent": text}, "json")
    assert response.status_code == 201
    return response.json()["id"]


def settled() -> bool:
    """No job is waiting to run or running (every one is completed or deferred)."""
    return not EnrichmentJob.objects.filter(status__in=WAITING_OR_RUNNING).exists()


def test_a_budget_too_small_for_the_next_call_is_declared_exhausted_and_the_rest_waits(
    use_openai, celery_worker, make_user, settings
):
    user = make_user("tight@example.com")
    api = client_for(user)
    first = post(api, "Dentist appointment on Monday")
    wait_for(lambda: Memory.objects.get(pk=first).enrichment_status == "enriched", what="one")
    one_memory = AICostRecord.objects.aggregate(total=Sum("cost_cents"))["total"]
    # Room for about two and a half more memories: the rest of the day cannot cover a call.
    settings.AI_DAILY_BUDGET_CENTS = one_memory * Decimal("3.5")
    for i in range(6):
        post(api, f"Call the plumber about the leak number {i}")
    wait_for(settled, what="every job to be enriched or deferred")

    row = DailyBudget.objects.get()
    assert row.exhausted_at is not None
    assert row.spent_cents < settings.AI_DAILY_BUDGET_CENTS  # exhausted below 100 % ...
    assert row.reserved_cents == 0
    staff = client_for(make_user("ops@example.com", staff=True))
    breaker = staff.get("/api/v1/admin/circuit-breaker").json()
    assert (breaker["state"], breaker["openReason"]) == ("open", "budget_exhausted")  # ... open
    deferred = EnrichmentJob.objects.filter(status=JobStatus.DEFERRED)
    assert deferred.exists()
    assert set(deferred.values_list("deferred_reason", flat=True)) == {"budget_exhausted"}
    assert {job.not_before for job in deferred} == {next_reset()}
    critical = Alert.objects.filter(kind="budget_threshold", severity="critical")
    assert critical.count() == 1  # the 100 % alert, once
    assert "exhausted" in critical.get().title
    enriched = Memory.objects.filter(enrichment_status="enriched").count()
    assert enriched + deferred.count() == 7


def test_resume_puts_the_work_deferred_by_a_pause_back_at_once(
    use_openai, celery_worker, make_user
):
    user = make_user("paused@example.com")
    staff = client_for(make_user("ops@example.com", staff=True))
    assert staff.post("/api/v1/admin/circuit-breaker/pause").status_code == 200
    ids = [post(client_for(user), f"Paused thought {i}") for i in range(4)]
    wait_for(
        lambda: (
            EnrichmentJob.objects.filter(
                status=JobStatus.DEFERRED, deferred_reason="budget_paused"
            ).count()
            == 4
        ),
        what="the jobs to be deferred by the pause",
    )
    assert staff.post("/api/v1/admin/circuit-breaker/resume").status_code == 200
    # No sweep runs in this test: only the resume can have put them back.
    wait_for(
        lambda: Memory.objects.filter(pk__in=ids, enrichment_status="enriched").count() == 4,
        what="every paused memory to be enriched after the resume",
    )


def test_a_burst_of_rate_limits_delays_by_seconds_and_never_opens_the_provider_breaker(
    use_openai, celery_worker, user, settings
):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 5
    use_openai.script(["429"] * 6)  # each with Retry-After: 1
    ids = [post(client_for(user), f"Rate limited note {i}") for i in range(2)]
    # No sweep runs in this test: each job is sent again after its Retry-After by itself.
    wait_for(
        lambda: Memory.objects.filter(pk__in=ids, enrichment_status="enriched").count() == 2,
        timeout=60,
        what="both memories to be enriched after the rate limits",
    )
    breaker = ProviderBreaker.objects.get()
    assert (breaker.state, breaker.consecutive_failures) == ("closed", 0)
    assert all(job.attempts == 1 for job in EnrichmentJob.objects.all())
    # 6 rate-limited calls, 2 classifications, and the embeddings in one request or two (one
    # when both jobs were due together); each memory charged once per operation.
    assert len(use_openai.calls) - 6 - 2 in (1, 2)
    assert sorted(use_openai.embedded_texts()[-2:]) == [
        "Rate limited note 0",
        "Rate limited note 1",
    ]
    assert AICostRecord.objects.count() == 4
