"""Job processing step by step (inline, no worker): gates, retries, failures, breakers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import time_machine
from celery import current_app
from django.db import transaction
from django.utils import timezone

from costs import budget
from costs.models import AICostRecord, DailyBudget, ProviderBreaker, UserUsage
from enrichment import services
from enrichment.models import EnrichmentJob, JobStatus
from memories.models import Memory
from memories.services import memory_create, memory_delete, memory_update

pytestmark = pytest.mark.django_db


def new_job(user, text="Dentist appointment on Monday") -> EnrichmentJob:
    memory = memory_create(user=user, text_content=text, type="note")
    return EnrichmentJob.objects.get(memory=memory)


def run(job) -> str:
    return services.job_process(job_id=job.pk, worker="test")


def refreshed(job):
    job.refresh_from_db()
    job.memory.refresh_from_db()
    return job


def test_creating_a_memory_creates_a_pending_job_and_dispatches_it_on_commit(
    user, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args, queue, **kw: sent.append((name, args))
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = new_job(user)
    assert job.status == JobStatus.PENDING
    assert sent == [(services.PROCESS_TASK, [job.pk])]


def test_it_enriches_with_the_local_provider_by_default(user):
    job = new_job(user)
    assert run(job) == "completed"
    job = refreshed(job)
    assert job.status == JobStatus.COMPLETED and job.attempts == 1
    assert job.memory.enrichment_status == "enriched"
    assert job.memory.category == "health"
    assert job.memory.embedding.model == "local-hash-v1"
    records = AICostRecord.objects.filter(memory_id=job.memory.pk)
    assert {r.provider for r in records} == {"local"}
    assert all(r.cost_cents == 0 for r in records)  # priced at 0, still counted
    assert records.count() == 2


def test_a_second_run_of_a_finished_job_does_nothing(user):
    job = new_job(user)
    run(job)
    assert run(job) == "not_claimed"
    assert AICostRecord.objects.count() == 2


def test_a_deleted_memory_cancels_its_job_without_an_ai_call(user, use_openai):
    job = new_job(user)
    memory_delete(memory=job.memory)
    assert run(job) == "cancelled"
    assert refreshed(job).status == JobStatus.CANCELLED
    assert use_openai.calls == []


def test_changed_text_supersedes_the_waiting_job(user):
    job = new_job(user, "first text")
    memory_update(memory=job.memory, text_content="Flight to Lisbon")
    assert refreshed(job).status == JobStatus.CANCELLED
    newer = EnrichmentJob.objects.exclude(pk=job.pk).get()
    assert run(newer) == "completed"
    assert Memory.objects.get(pk=job.memory_id).category == "travel"


def test_text_changed_during_the_call_keeps_the_newer_result(user, use_openai, monkeypatch):
    job = new_job(user, "Pay the rent")
    provider = services.get_provider()
    original = provider.embed_many

    def embed_then_edit(texts):
        result = original(texts)
        with transaction.atomic():
            memory_update(memory=Memory.objects.get(pk=job.memory_id), text_content="Gym at 7")
        return result

    monkeypatch.setattr(provider, "embed_many", embed_then_edit)
    assert run(job) == "superseded"
    memory = Memory.objects.get(pk=job.memory_id)
    assert memory.category == "" and memory.enrichment_status == "pending"
    assert AICostRecord.objects.filter(memory_id=memory.pk).count() == 2  # spent, and recorded
    monkeypatch.setattr(provider, "embed_many", original)
    newer = EnrichmentJob.objects.get(memory=memory, status=JobStatus.PENDING)
    assert run(newer) == "completed"
    assert Memory.objects.get(pk=memory.pk).category == "health"


def test_a_spent_budget_defers_the_job_until_the_reset(user, settings):
    settings.AI_BUDGET_TIMEZONE = "America/New_York"
    with time_machine.travel(dt.datetime(2026, 11, 28, 22, 0, tzinfo=dt.UTC), tick=False):
        budget.budget_pause()
        job = new_job(user)
        assert run(job) == "deferred"
        job = refreshed(job)
        assert job.status == JobStatus.DEFERRED
        assert job.deferred_reason == "budget_paused" and job.attempts == 0
        assert job.memory.enrichment_status == "deferred"
        # Midnight in New York is 05:00 UTC.
        assert job.not_before == dt.datetime(2026, 11, 29, 5, 0, tzinfo=dt.UTC)
        assert services.jobs_sweep().dispatched == 0
        assert run(job) == "not_claimed"
    with time_machine.travel(dt.datetime(2026, 11, 29, 5, 0, 1, tzinfo=dt.UTC), tick=False):
        assert budget.budget_breaker_state() == "closed"
        assert [row[0] for row in services.jobs_due(now=timezone.now(), limit=10)] == [job.pk]
        assert run(job) == "completed"


def test_a_budget_refused_reservation_defers(user, settings):
    settings.AI_DAILY_BUDGET_CENTS = 0
    job = new_job(user)
    assert run(job) == "deferred"
    assert refreshed(job).deferred_reason == "budget_exhausted"
    assert AICostRecord.objects.count() == 0


def test_a_reservation_refused_under_the_limit_retries_when_room_is_freed(
    user, use_openai, settings, django_capture_on_commit_callbacks, monkeypatch
):
    """Calls in flight hold the rest of the budget: retry at once when one gives it back."""
    settings.AI_DAILY_BUDGET_CENTS = D("10")
    held = budget.budget_reserve(
        estimate_cents=D("10"), user_id=None, memory_id=None, operation="embedding",
        provider="openai", model="text-embedding-3-small", input_tokens=0, output_tokens=0,
    )  # fmt: skip
    sent = []
    monkeypatch.setattr(
        services, "job_dispatch", lambda *, job_id, countdown=None: sent.append(job_id) or True
    )
    job = new_job(user)
    before = timezone.now()
    assert run(job) == "deferred"
    job = refreshed(job)
    assert job.deferred_reason == "budget_reserved"
    assert before + dt.timedelta(seconds=29) < job.not_before < before + dt.timedelta(seconds=60)
    assert use_openai.calls == []
    assert DailyBudget.objects.get().exhausted_at is None  # a call in flight may free room
    with django_capture_on_commit_callbacks(execute=True):
        budget.budget_release(reservation=held)
    assert refreshed(job).not_before <= timezone.now()
    assert job.pk in sent
    assert run(job) == "completed"


def test_a_user_over_their_enrichment_limit_is_deferred(user, settings):
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1
    first, second = new_job(user, "one"), new_job(user, "two")
    assert run(first) == "completed"
    assert run(second) == "deferred"
    assert refreshed(second).deferred_reason == "user_enrichment_limit"


def test_a_429_waits_its_retry_after_without_using_an_attempt_then_succeeds(user, use_openai):
    use_openai.script(["429"])
    job = new_job(user)
    before = timezone.now()
    assert run(job) == "deferred"
    job = refreshed(job)
    assert job.status == JobStatus.DEFERRED and job.deferred_reason == "rate_limited"
    assert job.attempts == 0  # a rate limit is not the job's failure
    assert before + dt.timedelta(seconds=1) <= job.not_before < before + dt.timedelta(seconds=5)
    assert AICostRecord.objects.count() == 0  # a refused call costs nothing
    assert ProviderBreaker.objects.get().consecutive_failures == 0  # and is not an outage
    assert run(job) == "not_claimed"  # not due yet
    with time_machine.travel(job.not_before + dt.timedelta(seconds=1), tick=False):
        assert run(job) == "completed"
    assert refreshed(job).attempts == 1


def test_a_401_fails_at_once(user, use_openai):
    use_openai.script(["401"])
    job = new_job(user)
    assert run(job) == "failed"
    job = refreshed(job)
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert "401" in job.last_error and "sk-test" not in job.last_error
    assert job.memory.enrichment_status == "failed"


def test_retryable_errors_fail_after_the_maximum_attempts(user, use_openai, settings):
    settings.ENRICHMENT_MAX_ATTEMPTS = 3
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 100
    use_openai.script(["500"] * 3)
    job = new_job(user)
    outcomes = []
    for hours in (1, 2, 3):
        with time_machine.travel(timezone.now() + dt.timedelta(hours=hours), tick=False):
            outcomes.append(run(job))
        job.refresh_from_db()
    assert outcomes == ["retrying", "retrying", "failed"]
    assert job.status == JobStatus.FAILED and job.attempts == 3


def test_a_malformed_answer_is_retried_and_its_billed_tokens_recorded(user, use_openai):
    use_openai.script(["bad_content"])
    job = new_job(user)
    assert run(job) == "retrying"
    record = AICostRecord.objects.get()
    assert record.operation == "classification" and record.input_tokens > 0


def test_the_provider_breaker_opens_and_recovers_through_one_probe(user, use_openai, settings):
    from costs import breaker

    settings.AI_PROVIDER_FAILURE_THRESHOLD = 2
    settings.AI_PROVIDER_COOLDOWN_SECONDS = 60
    use_openai.script(["500", "500"])
    jobs = [new_job(user, f"note {i}") for i in range(3)]
    assert run(jobs[0]) == "retrying"
    assert run(jobs[1]) == "retrying"
    assert run(jobs[2]) == "deferred"  # breaker open: no call made
    assert refreshed(jobs[2]).deferred_reason == "provider_breaker"
    calls_while_open = len(use_openai.calls)
    later = timezone.now() + dt.timedelta(seconds=61)
    with time_machine.travel(later, tick=False):
        assert run(jobs[2]) == "completed"  # the one probe succeeds
        assert breaker.provider_breaker_allow() is True  # closed again
    assert len(use_openai.calls) == calls_while_open + 2


def test_the_sweep_requeues_expired_leases_and_fails_exhausted_ones(user, settings):
    settings.ENRICHMENT_MAX_ATTEMPTS = 2
    a, b = new_job(user, "a"), new_job(user, "b")
    past = timezone.now() - dt.timedelta(seconds=1)
    EnrichmentJob.objects.filter(pk=a.pk).update(
        status=JobStatus.PROCESSING, attempts=1, lease_expires_at=past
    )
    EnrichmentJob.objects.filter(pk=b.pk).update(
        status=JobStatus.PROCESSING, attempts=2, lease_expires_at=past
    )
    result = services.jobs_sweep()
    assert (result.requeued, result.failed) == (1, 1)
    assert refreshed(a).status == JobStatus.PENDING
    assert refreshed(b).status == JobStatus.FAILED
    assert b.memory.enrichment_status == "failed"


def test_the_sweep_dispatches_normal_before_deferred_up_to_the_batch(user, settings, monkeypatch):
    settings.ENRICHMENT_BATCH_SIZE = 3
    sent = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args, queue, **kw: sent.append(args[0])
    )
    deferred = [new_job(user, f"d{i}") for i in range(2)]
    EnrichmentJob.objects.filter(pk__in=[j.pk for j in deferred]).update(
        status=JobStatus.DEFERRED, not_before=timezone.now(), dispatched_at=None
    )
    normal = [new_job(user, f"n{i}") for i in range(2)]
    EnrichmentJob.objects.filter(pk__in=[j.pk for j in normal]).update(dispatched_at=None)
    assert services.jobs_sweep().dispatched == 3
    assert sent == [normal[0].pk, normal[1].pk, deferred[0].pk]
    # Jobs just sent are not sent again by the next sweep.
    sent.clear()
    assert services.jobs_sweep().dispatched == 1
    assert sent == [deferred[1].pk]


def test_staff_can_retry_failed_jobs(user, use_openai):
    use_openai.script(["401"])
    job = new_job(user)
    run(job)
    assert services.jobs_retry(queryset=EnrichmentJob.objects.all()) == 1
    retry = EnrichmentJob.objects.get(status=JobStatus.PENDING)
    assert retry.memory_id == job.memory_id
    assert Memory.objects.get(pk=job.memory_id).enrichment_status == "pending"
    assert run(retry) == "completed"


def test_an_edit_during_the_classification_skips_the_embedding_and_every_run_counts(
    user, use_openai, monkeypatch
):
    job = new_job(user, "Pay the rent")
    provider = services.get_provider()
    original = provider.classify

    def classify_then_edit(text):
        result = original(text)
        with transaction.atomic():
            memory_update(memory=Memory.objects.get(pk=job.memory_id), text_content="Gym at 7")
        return result

    monkeypatch.setattr(provider, "classify", classify_then_edit)
    assert run(job) == "superseded"
    assert use_openai.calls_to("/v1/embeddings") == []  # not paid for the old text
    monkeypatch.setattr(provider, "classify", original)
    newer = EnrichmentJob.objects.get(memory_id=job.memory_id, status=JobStatus.PENDING)
    assert run(newer) == "completed"
    # Usage counts calls, not completions: the superseded run was paid, so it counts.
    assert UserUsage.objects.get(user=user).enrichments == 2


def test_rapid_edits_coalesce_behind_the_run_in_flight(user, api):
    job = new_job(user, "first text")
    # A run of this memory is in flight.
    assert services._claim_batch(job_ids=[job.pk], more=False, limit=1, worker="busy")
    for i in range(5):
        response = api.patch(
            f"/api/v1/memories/{job.memory_id}", {"textContent": f"edit {i}"}, "json"
        )
        assert response.status_code == 200
    statuses = list(
        EnrichmentJob.objects.filter(memory_id=job.memory_id).values_list("status", flat=True)
    )
    assert statuses.count(JobStatus.PROCESSING) == 1
    assert statuses.count(JobStatus.PENDING) == 1  # one waiting, the newest text
    assert statuses.count(JobStatus.CANCELLED) == 4
    waiting = EnrichmentJob.objects.get(memory_id=job.memory_id, status=JobStatus.PENDING)
    assert run(waiting) == "not_claimed"  # never two runs of one memory at once
    services._finish(EnrichmentJob.objects.get(pk=job.pk), JobStatus.CANCELLED)  # it ends
    assert run(waiting) == "completed"
    assert Memory.objects.get(pk=job.memory_id).text_content == "edit 4"
