"""Jobs enriched in batches: one claim, one embeddings request, one hold and one settle per
batch, and every memory and ledger row as right as if each job had run alone."""

from __future__ import annotations

import math
import threading

import psycopg
import pytest
from django.db import connection
from django.db.models import Sum

from common.clock import today
from costs.models import AICostRecord, BudgetReservation, DailyBudget, DailyCostTotal, UserUsage
from enrichment import services
from enrichment.models import EnrichmentJob, JobStatus
from enrichment.providers.base import Usage, usage_split
from enrichment.testing.openai_stub import FAIL_MARKER
from memories.models import Embedding, EnrichmentStatus, Memory
from memories.services import memory_create

pytestmark = pytest.mark.django_db


def job_for(user, text: str) -> EnrichmentJob:
    memory = memory_create(user=user, text_content=text, type="note")
    return EnrichmentJob.objects.get(memory=memory)


def test_a_batch_of_mixed_outcomes_leaves_every_memory_and_ledger_row_right(make_user, use_openai):
    limited = make_user("limited@example.com", daily_enrichment_limit=1)
    bob = make_user("bob@example.com")
    UserUsage.objects.update_or_create(user=limited, day=today(), defaults={"enrichments": 1})
    deferred = job_for(limited, "Call the bank about the loan")
    superseded = job_for(bob, "Buy milk on the way home")
    Memory.objects.filter(pk=superseded.memory_id).update(text_content="Buy oat milk instead")
    failing = job_for(bob, f"Gym at seven {FAIL_MARKER}")
    completed = [job_for(bob, text) for text in ("Dentist on Monday", "Flight to Lisbon", "Pizza")]
    jobs = [deferred, superseded, failing, *completed]

    outcomes = services.jobs_process(job_ids=[job.pk for job in jobs], more=False, worker="test")

    assert outcomes == {
        deferred.pk: "deferred",
        superseded.pk: "superseded",
        failing.pk: "failed",
        **{job.pk: "completed" for job in completed},
    }
    status = dict(Memory.objects.values_list("pk", "enrichment_status"))
    assert status[deferred.memory_id] == EnrichmentStatus.DEFERRED
    assert status[failing.memory_id] == EnrichmentStatus.FAILED
    assert status[superseded.memory_id] == EnrichmentStatus.PENDING  # its newer text is not ours
    assert {status[job.memory_id] for job in completed} == {EnrichmentStatus.ENRICHED}
    assert EnrichmentJob.objects.get(pk=deferred.pk).deferred_reason == "user_enrichment_limit"
    assert EnrichmentJob.objects.get(pk=deferred.pk).attempts == 0  # not an attempt
    assert EnrichmentJob.objects.get(pk=failing.pk).status == JobStatus.FAILED
    assert EnrichmentJob.objects.get(pk=superseded.pk).status == JobStatus.CANCELLED
    assert Embedding.objects.filter(memory_id__in=[j.memory_id for j in completed]).count() == 3
    assert Memory.objects.get(pk=completed[1].memory_id).category == "travel"

    # One classification call per live memory, one embeddings request for the three completed.
    assert len(use_openai.calls_to("/v1/chat/completions")) == 4
    embeddings = use_openai.calls_to("/v1/embeddings")
    assert len(embeddings) == 1 and len(embeddings[0]["body"]["input"]) == 3

    # The ledger: two rows per completed memory, none for the others (the 400 was not billed).
    rows = AICostRecord.objects.all()
    assert sorted((str(r.memory_id), r.operation) for r in rows) == sorted(
        (str(job.memory_id), operation)
        for job in completed
        for operation in ("classification", "embedding")
    )
    embedded_tokens = rows.filter(operation="embedding").aggregate(n=Sum("input_tokens"))["n"]
    texts = ("Dentist on Monday", "Flight to Lisbon", "Pizza")
    reported = sum(math.ceil(len(text.encode()) / 4) for text in texts)  # the stub's count
    assert embedded_tokens == reported  # the per-memory shares add up to what the stub billed
    day = DailyBudget.objects.get()
    ledger = rows.aggregate(total=Sum("cost_cents"))["total"]
    assert day.spent_cents == ledger and day.reserved_cents == 0
    assert DailyCostTotal.objects.aggregate(t=Sum("cost_cents"))["t"] == ledger
    assert not BudgetReservation.objects.filter(state="active").exists()
    # Usage: bob's four runs that were reserved count (the failed one was attempted);
    # the limited user's deferred run counted nothing more.
    assert UserUsage.objects.get(user=bob).enrichments == 4
    assert UserUsage.objects.get(user=bob).cost_cents == ledger
    assert UserUsage.objects.get(user=limited).enrichments == 1


def test_a_task_claims_the_jobs_due_with_it_and_stops_when_none_is_left(user, use_openai):
    jobs = [job_for(user, f"note number {i}") for i in range(7)]
    outcomes = services.jobs_process(job_ids=[jobs[3].pk], worker="test")
    assert outcomes == {job.pk: "completed" for job in jobs}
    # Its own job first, the others oldest first, all in one batch of ENRICHMENT_BATCH_SIZE.
    assert len(use_openai.calls_to("/v1/embeddings")) == 1
    assert services.jobs_process(job_ids=[jobs[0].pk], worker="test") == {}


def test_a_refused_input_fails_only_its_own_memory(user, use_openai, monkeypatch):
    jobs = [job_for(user, text) for text in ("first note", "second note", "third note")]
    for job in jobs:  # classified already (a previous attempt): only the embedding is left
        EnrichmentJob.objects.filter(pk=job.pk).update(
            classification={"category": "other", "tags": []}, usage_counted=True
        )
    Memory.objects.filter(pk=jobs[1].memory_id).update(text_content=f"second {FAIL_MARKER}")
    EnrichmentJob.objects.filter(pk=jobs[1].pk).update(
        text_hash=services.text_hash(f"second {FAIL_MARKER}")
    )
    outcomes = services.jobs_process(job_ids=[job.pk for job in jobs], more=False, worker="t")
    assert outcomes == {jobs[0].pk: "completed", jobs[1].pk: "failed", jobs[2].pk: "completed"}
    assert AICostRecord.objects.filter(operation="embedding").count() == 2


def test_an_embeddings_answer_short_of_a_vector_is_charged_as_billed_and_retried(
    user, use_openai, settings
):
    settings.ENRICHMENT_RETRY_BASE_SECONDS = 0
    settings.ENRICHMENT_RETRY_MAX_SECONDS = 0
    texts = ("Dentist on Monday", "Flight to Lisbon", "Pizza on Friday")
    jobs = [job_for(user, text) for text in texts]
    use_openai.script(["ok", "ok", "ok", "bad_content"])  # three classifications, then embeddings

    outcomes = services.jobs_process(job_ids=[job.pk for job in jobs], more=False, worker="t")

    assert set(outcomes.values()) == {"retrying"}
    billed = AICostRecord.objects.filter(operation="embedding")
    reported = sum(math.ceil(len(text.encode()) / 4) for text in texts)  # the stub's count
    # The provider billed the request although its answer was unusable: each memory is charged
    # its share, and the shares add up to what was billed.
    assert billed.count() == 3 and billed.aggregate(n=Sum("input_tokens"))["n"] == reported
    assert not BudgetReservation.objects.filter(state="active").exists()
    assert {j.classification is not None for j in EnrichmentJob.objects.all()} == {True}

    outcomes = services.jobs_process(job_ids=[job.pk for job in jobs], more=False, worker="t")
    assert set(outcomes.values()) == {"completed"}
    assert len(use_openai.calls_to("/v1/chat/completions")) == 3  # kept: never paid twice
    assert AICostRecord.objects.filter(operation="embedding").count() == 6
    day = DailyBudget.objects.get()
    assert day.spent_cents == AICostRecord.objects.aggregate(t=Sum("cost_cents"))["t"]


def test_a_classification_is_charged_only_with_its_result_kept(user, use_openai, monkeypatch):
    jobs = [job_for(user, text) for text in ("Dentist on Monday", "Flight to Lisbon")]

    def keep_fails(runs):
        raise RuntimeError("the worker died here")

    monkeypatch.setattr(services, "_classifications_keep", keep_fails)
    with pytest.raises(RuntimeError, match="died here"):
        services.jobs_process(job_ids=[job.pk for job in jobs], more=False, worker="t")
    # Neither the ledger rows nor the results: the holds stay until they expire and are
    # charged then, as after a crash; a re-run classifies again with nothing recorded twice.
    assert not AICostRecord.objects.exists()
    assert BudgetReservation.objects.filter(state="active").count() == 2
    assert {j.classification for j in EnrichmentJob.objects.all()} == {None}


@pytest.mark.django_db(transaction=True)  # the editor's connection must see the rows
def test_the_claim_skips_a_memory_locked_by_an_edit_instead_of_waiting(user, use_openai):
    locked, free = job_for(user, "Being edited"), job_for(user, "Left alone")
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
        dbname=db["NAME"],
    ) as editor:  # fmt: skip
        # An edit's transaction: the memory first (then it would cancel the waiting job).
        editor.execute(
            "SELECT 1 FROM memories_memory WHERE id = %s FOR NO KEY UPDATE", [locked.memory_id]
        )
        with connection.cursor() as cursor:  # waiting for the lock would fail the test, not hang it
            cursor.execute("SET lock_timeout = '5s'")
        try:
            runs = services._claim_batch(
                job_ids=[locked.pk, free.pk], more=False, limit=10, worker="t"
            )
        finally:
            editor.rollback()
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    assert [run.job.pk for run in runs] == [free.pk]
    assert EnrichmentJob.objects.get(pk=locked.pk).status == JobStatus.PENDING


def test_concurrent_calls_all_finish_before_an_interrupted_batch_goes_on(settings):
    settings.ENRICHMENT_CLASSIFY_CONCURRENCY = 4
    finished, interrupt = [], threading.Event()

    def call(run: str) -> None:
        if run == "interrupted":
            raise RuntimeError("the task's soft time limit")
        interrupt.wait(timeout=1)  # a call still under way when the other one raises
        finished.append(run)

    with pytest.raises(RuntimeError, match="soft time limit"):
        services._concurrently(call, ["interrupted", "slow"])
    assert finished == ["slow"]  # it reported before the batch could close


@pytest.mark.parametrize(
    ("total", "weights"),
    [(Usage(10, 3, 4), [1, 1, 1]), (Usage(7), [5, 0, 2]), (Usage(1000, 0, 999), [3, 3, 4, 9])],
)
def test_a_batched_usage_splits_exactly_by_share(total, weights):
    parts = usage_split(total, weights)
    assert sum(p.input_tokens for p in parts) == total.input_tokens
    assert sum(p.output_tokens for p in parts) == total.output_tokens
    assert sum(p.cached_tokens for p in parts) == total.cached_tokens
    assert all(p.cached_tokens <= p.input_tokens for p in parts)
