"""OpenAI's Batch API for embeddings that can wait: sent as a file, polled, applied and settled at
the batch prices, each memory held, applied and charged exactly once — with the real `openai`
client against the stub's Files and Batches endpoints, and a real worker killed mid-poll."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from costs import budget
from costs.models import AICostRecord, BudgetReservation, DailyBudget, DailyCostTotal, UserUsage
from costs.pricing import price_quote
from enrichment import batch_api, services
from enrichment.models import AIBatch, AIBatchItem, BatchItemState, BatchStatus
from enrichment.selectors import batches_overview, embeddings_stale
from enrichment.testing import processes
from enrichment.testing.openai_stub import FAIL_MARKER
from enrichment.tests.conftest import LOGS, wait_for
from memories.models import Embedding, Memory
from memories.services import embedding_save, memory_delete, memory_update

OLD_MODEL = "text-embedding-ada-002"
MODEL = "text-embedding-3-small"


def stale_memories(user, texts: list[str]) -> list[Memory]:
    """Memories whose embedding an older model made (what a model change leaves behind)."""
    memories = []
    for text in texts:
        memory = Memory.objects.create(user=user, text_content=text, enrichment_status="enriched")
        embedding_save(memory_id=memory.pk, model=OLD_MODEL, dimensions=16, vector=[0.25] * 16)
        memories.append(memory)
    return memories


def stub_tokens(text: str) -> int:
    """What the stub bills for a text (its usage.prompt_tokens)."""
    return max(1, math.ceil(len(text.encode()) / 4))


def batch_cost(texts: list[str]) -> Decimal:
    quote = price_quote(provider="openai", model=MODEL, batch=True)
    return sum((quote.cost(input_tokens=stub_tokens(text)) for text in texts), Decimal(0))


def sent_lines(stub) -> list[dict]:
    """The JSONL lines of every input file uploaded to the stub."""
    lines = []
    with stub.state.lock:
        files = [f for f in stub.state.files.values() if f["meta"]["purpose"] == "batch"]
    for stored in files:
        lines += [json.loads(line) for line in stored["content"].decode().splitlines()]
    return lines


def assert_books_agree() -> None:
    """The ledger, the day's roll-ups, the day's spent and the users' cost agree to the cent,
    and nothing is held."""
    ledger = AICostRecord.objects.aggregate(total=Sum("cost_cents"))["total"] or Decimal(0)
    day = DailyBudget.objects.get()
    assert day.spent_cents == ledger
    assert day.reserved_cents == 0
    rollup = DailyCostTotal.objects.aggregate(total=Sum("cost_cents"))["total"] or Decimal(0)
    assert rollup == ledger
    assert day.operation_count == AICostRecord.objects.count()
    users = UserUsage.objects.aggregate(total=Sum("cost_cents"))["total"] or Decimal(0)
    assert users == ledger
    assert not BudgetReservation.objects.filter(state="active").exists()


# --- in-process: the whole path with the real client --------------------------------------------


@pytest.mark.django_db
def test_it_sends_polls_applies_and_charges_a_batch_once_at_the_batch_prices(user, use_openai):
    texts = ["the first memory to re-embed", "a second one", "and a third, a little longer"]
    memories = stale_memories(user, texts)

    out = StringIO()
    call_command("enrich", "--batch-api", "--dry-run", stdout=out)
    assert f"Would send 3 memories to the Batch API ({MODEL}" in out.getvalue()
    plan = batch_api.batch_plan(limit=10)
    assert plan.estimate_cents < plan.synchronous_cents  # the batch prices are the cheaper ones
    assert f"estimated {plan.estimate_cents}¢ at the batch prices" in out.getvalue()
    assert use_openai.calls == []  # a dry run sends nothing

    call_command("enrich", "--batch-api", stdout=out)
    batch = AIBatch.objects.get()
    assert batch.status == BatchStatus.OPEN and batch.provider_status == "in_progress"
    items = list(batch.items.order_by("pk"))
    assert [item.memory_id for item in items] == [m.pk for m in memories]
    held = BudgetReservation.objects.filter(state="active", batch_api=True)
    assert sorted(held.values_list("pk", flat=True)) == sorted(i.reservation_id for i in items)
    assert DailyBudget.objects.get().reserved_cents == batch.estimate_cents > 0
    lines = sent_lines(use_openai)
    assert [line["custom_id"] for line in lines] == [item.custom_id for item in items]
    assert {line["url"] for line in lines} == {"/v1/embeddings"}
    assert [line["body"]["input"] for line in lines] == texts
    assert {line["body"]["dimensions"] for line in lines} == {16}

    # While the batch is open its memories are not re-embedded synchronously too.
    assert embeddings_stale().count() == 0
    assert services.embeddings_refresh(limit=10, when_idle=False).done == 0
    assert use_openai.calls_to("/v1/embeddings") == []
    out = StringIO()
    call_command("enrich", "--batch-api", "--status", stdout=out)
    assert f"batch {batch.pk} {batch.provider_batch_id} open (in_progress): 3 memories" in (
        out.getvalue()
    )

    assert batch_api.batches_poll().finished == 0  # still in progress: nothing changes
    assert AIBatch.objects.get().status == BatchStatus.OPEN
    assert AICostRecord.objects.count() == 0

    use_openai.batches_complete()
    result = batch_api.batches_poll()
    assert (result.finished, result.applied) == (1, 3)
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED and batch.requests_completed == 3
    assert set(batch.items.values_list("state", flat=True)) == {BatchItemState.APPLIED}
    rows = Embedding.objects.filter(memory__in=memories)
    assert {(row.model, row.dimensions) for row in rows} == {(MODEL, 16)}
    assert embeddings_stale().count() == 0

    ledger = AICostRecord.objects.order_by("memory_id")
    assert sorted(ledger.values_list("memory_id", flat=True)) == sorted(m.pk for m in memories)
    assert set(ledger.values_list("operation", "batch_api")) == {("embedding", True)}
    by_memory = {row.memory_id: row for row in ledger}
    for memory in memories:
        assert by_memory[memory.pk].input_tokens == stub_tokens(memory.text_content)
    assert sum(row.cost_cents for row in ledger) == batch_cost(texts)
    assert_books_agree()

    # Polling again, or finishing the same answers again, applies and charges nothing more.
    batch_api.batches_poll()
    assert len([c for c in use_openai.calls if "/content" in c["path"]]) == 1  # not again
    answers = batch_api._answers(batch_api.get_provider().client, batch.output_file_id)
    assert len(answers) == 3
    assert batch_api.batch_finish(batch_id=batch.pk, answers=answers, final="completed") == 0
    assert set(batch.items.values_list("state", flat=True)) == {BatchItemState.APPLIED}
    assert AICostRecord.objects.count() == 3
    assert_books_agree()


@pytest.mark.django_db
def test_a_failed_line_is_released_and_the_rest_applied(user, use_openai):
    texts = ["fine one", f"refused {FAIL_MARKER} by the provider", "fine two"]
    good_one, bad, good_two = stale_memories(user, texts)
    result = batch_api.batch_submit(limit=10)
    assert result.sent == 3
    use_openai.batches_complete()
    batch_api.batches_poll()

    batch = AIBatch.objects.get()
    assert batch.status == BatchStatus.COMPLETED and batch.requests_failed == 1
    states = dict(batch.items.values_list("memory_id", "state"))
    assert states == {
        good_one.pk: BatchItemState.APPLIED,
        bad.pk: BatchItemState.FAILED,
        good_two.pk: BatchItemState.APPLIED,
    }
    assert batch.items.get(memory_id=bad.pk).error.startswith("400")
    # Nothing billed for the refused line: its hold is given back, no ledger row.
    assert sorted(AICostRecord.objects.values_list("memory_id", flat=True)) == sorted(
        [good_one.pk, good_two.pk]
    )
    assert BudgetReservation.objects.get(
        pk=batch.items.get(memory_id=bad.pk).reservation_id
    ).state == ("released")
    assert AICostRecord.objects.aggregate(t=Sum("cost_cents"))["t"] == batch_cost(
        [texts[0], texts[2]]
    )
    assert_books_agree()
    # Still another model's embedding: it is stale again, for the next run.
    assert list(embeddings_stale().values_list("memory_id", flat=True)) == [bad.pk]


@pytest.mark.django_db
def test_a_failed_line_that_billed_tokens_is_settled_at_its_usage(user, use_openai):
    billed, unbilled = stale_memories(user, ["malformed but billed", "refused, not billed"])
    batch_api.batch_submit(limit=10)
    batch = AIBatch.objects.get()
    first, second = batch.items.order_by("pk")
    AIBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.FINISHING)
    answers = {
        first.custom_id: {
            "custom_id": first.custom_id,
            "response": {
                "status_code": 200,
                "body": {"model": MODEL, "data": [], "usage": {"prompt_tokens": 7}},
            },
        },
        second.custom_id: {
            "custom_id": second.custom_id,
            "response": None,
            "error": {"code": "batch_expired", "message": "not answered in time"},
        },
    }
    assert batch_api.batch_finish(batch_id=batch.pk, answers=answers, final="completed") == 0
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.error) == (BatchItemState.FAILED, "malformed answer")
    assert (second.state, second.error) == (BatchItemState.FAILED, "error batch_expired")
    row = AICostRecord.objects.get()
    assert (row.memory_id, row.input_tokens) == (billed.pk, 7)
    assert row.cost_cents == price_quote(provider="openai", model=MODEL, batch=True).cost(
        input_tokens=7
    )
    assert BudgetReservation.objects.get(pk=second.reservation_id).state == "released"
    assert AIBatch.objects.get().status == BatchStatus.COMPLETED
    assert set(Embedding.objects.values_list("model", flat=True)) == {OLD_MODEL}
    assert_books_agree()


@pytest.mark.django_db
@pytest.mark.parametrize("end", ["expired", "failed", "cancelled"])
def test_a_batch_that_ends_unanswered_releases_every_hold(user, use_openai, end):
    stale_memories(user, ["one", "two", "three"])
    batch_api.batch_submit(limit=10)
    batch = AIBatch.objects.get()
    if end == "cancelled":
        assert batch_api.batch_cancel(batch_id=batch.pk)
    else:
        use_openai.batches_end(end)
    batch_api.batches_poll()

    batch.refresh_from_db()
    assert batch.status == end and batch.finished_at is not None
    assert set(batch.items.values_list("state", flat=True)) == {BatchItemState.RELEASED}
    assert set(BudgetReservation.objects.values_list("state", flat=True)) == {"released"}
    assert AICostRecord.objects.count() == 0
    assert DailyBudget.objects.get().reserved_cents == 0
    assert_books_agree()
    assert embeddings_stale().count() == 3  # free for the next batch (or the synchronous way)
    if end == "failed":
        assert "stub_failure" in batch.error


@pytest.mark.django_db
def test_an_expired_batch_keeps_what_it_answered_and_releases_the_rest(user, use_openai):
    texts = ["answered before the end", "never answered", "never answered either"]
    first, *rest = stale_memories(user, texts)
    batch_api.batch_submit(limit=10)
    use_openai.batches_end("expired", completed_first=1)
    batch_api.batches_poll()

    batch = AIBatch.objects.get()
    assert batch.status == BatchStatus.EXPIRED
    assert batch.items.get(memory_id=first.pk).state == BatchItemState.APPLIED
    assert {batch.items.get(memory_id=m.pk).state for m in rest} == {BatchItemState.RELEASED}
    assert list(AICostRecord.objects.values_list("memory_id", flat=True)) == [first.pk]
    assert Embedding.objects.get(memory=first).model == MODEL
    assert_books_agree()


@pytest.mark.django_db
def test_a_memory_edited_or_deleted_meanwhile_is_charged_but_not_applied(user, use_openai):
    edited, deleted, kept = stale_memories(user, ["old text", "soon deleted", "kept as it is"])
    batch_api.batch_submit(limit=10)
    memory_update(memory=edited, text_content="new text, after the batch was sent")
    memory_delete(memory=deleted)
    use_openai.batches_complete()
    batch_api.batches_poll()

    batch = AIBatch.objects.get()
    states = dict(batch.items.values_list("memory_id", "state"))
    assert states == {
        edited.pk: BatchItemState.STALE,
        deleted.pk: BatchItemState.STALE,
        kept.pk: BatchItemState.APPLIED,
    }
    # The old text's embedding is not written over the edit; the provider billed all three.
    assert Embedding.objects.get(memory=edited).model == OLD_MODEL
    assert Embedding.objects.get(memory=deleted).model == OLD_MODEL
    assert Embedding.objects.get(memory=kept).model == MODEL
    assert AICostRecord.objects.count() == 3
    assert_books_agree()


@pytest.mark.django_db
def test_a_poller_that_dies_mid_chunk_leaves_nothing_applied_or_charged(
    user, use_openai, monkeypatch
):
    memories = stale_memories(user, ["alpha", "beta", "gamma"])
    batch_api.batch_submit(limit=10)
    use_openai.batches_complete()

    def die(**kwargs):
        raise SystemExit("worker killed")  # after the embeddings were written, before commit

    with monkeypatch.context() as patch:
        patch.setattr(batch_api.metering, "batch_settle", die)
        with pytest.raises(SystemExit):
            batch_api.batches_poll()
    assert AIBatch.objects.get().status == BatchStatus.FINISHING
    assert set(AIBatchItem.objects.values_list("state", flat=True)) == {BatchItemState.PENDING}
    assert set(Embedding.objects.values_list("model", flat=True)) == {OLD_MODEL}  # rolled back
    assert AICostRecord.objects.count() == 0

    assert batch_api.batches_poll().applied == 3
    assert AIBatch.objects.get().status == BatchStatus.COMPLETED
    assert sorted(AICostRecord.objects.values_list("memory_id", flat=True)) == sorted(
        m.pk for m in memories
    )
    assert_books_agree()


@pytest.mark.django_db
def test_nothing_is_sent_while_the_budget_refuses(user, use_openai):
    budget.budget_pause()
    stale_memories(user, ["cannot be paid for", "nor this"])
    result = batch_api.batch_submit(limit=10)
    assert (result.sent, result.refused, result.stopped) == (0, 2, budget.Refusal.BUDGET_PAUSED)
    assert AIBatch.objects.count() == 0 and sent_lines(use_openai) == []
    assert DailyBudget.objects.get().reserved_cents == 0
    assert embeddings_stale().count() == 2  # still waiting for a batch that can be paid for


@pytest.mark.django_db
def test_the_dashboard_and_the_admin_show_open_and_finished_batches(user, make_user, use_openai):
    stale_memories(user, ["shown on the dashboard"])
    batch_api.batch_submit(limit=10)
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    page = client.get("/admin/dashboard/").content.decode()
    batch = AIBatch.objects.get()
    assert 'id="batch-api"' in page
    assert f'data-batch="{batch.pk}" data-status="open"' in page
    assert batches_overview()["openItems"] == 1

    use_openai.batches_complete()
    batch_api.batches_poll()
    page = client.get("/admin/dashboard/live/").content.decode()
    assert f'data-batch="{batch.pk}" data-status="completed"' in page
    cost = AICostRecord.objects.get().cost_cents
    assert f'data-cost="{cost}"' in page and "1 applied" in page
    detail = client.get(f"/admin/enrichment/aibatch/{batch.pk}/change/")
    assert detail.status_code == 200 and "applied: 1" in detail.content.decode()
    item = AIBatchItem.objects.get()
    changelist = client.get(f"/admin/enrichment/aibatchitem/?batch_id={batch.pk}")
    assert changelist.status_code == 200 and str(item.memory_id) in changelist.content.decode()
    assert client.get("/admin/enrichment/aibatchitem/?batch_id=x").status_code == 200


@pytest.mark.django_db
def test_with_batch_reembedding_on_the_poll_sends_one_batch_at_a_time(user, use_openai, settings):
    settings.OPENAI_BATCH_REEMBED = True
    settings.OPENAI_BATCH_MAX_REQUESTS = 2
    memories = stale_memories(user, ["one", "two", "three"])
    assert batch_api.batches_poll().submitted == 2
    assert batch_api.batches_poll().submitted == 0  # one batch at a time
    assert AIBatch.objects.get().purpose == "reembed"
    use_openai.batches_complete()
    result = batch_api.batches_poll()  # finishes the first, sends the rest
    assert (result.finished, result.applied, result.submitted) == (1, 2, 1)
    use_openai.batches_complete()
    assert batch_api.batches_poll().submitted == 0  # nothing stale is left
    assert list(AIBatch.objects.values_list("status", flat=True)) == ["completed"] * 2
    assert {e.model for e in Embedding.objects.filter(memory__in=memories)} == {MODEL}
    assert AICostRecord.objects.count() == 3
    assert_books_agree()


@pytest.mark.django_db
def test_batch_reembedding_stops_when_the_provider_answers_another_model(
    user, use_openai, settings
):
    settings.OPENAI_BATCH_REEMBED = True
    use_openai.state.embedding_model_answer = "proxy-renamed-embedder"
    stale_memories(user, ["one", "two"])
    batch_api.batches_poll()
    use_openai.batches_complete()
    batch_api.batches_poll()
    batch = AIBatch.objects.get()
    assert batch.status == BatchStatus.COMPLETED
    assert batch.error.startswith(batch_api.MODEL_MISMATCH)
    assert batch_api.batches_poll().submitted == 0  # never the same memories again and again
    assert AIBatch.objects.count() == 1
    # The operator configures the model the provider really answers: re-embedding goes on.
    settings.OPENAI_EMBEDDING_MODEL = "proxy-renamed-embedder"
    stale_memories(user, ["three"])
    assert batch_api.batches_poll().submitted == 1


@pytest.mark.django_db
@pytest.mark.parametrize("created_at_the_provider", [True, False])
def test_a_submission_whose_submitter_died_is_adopted_or_given_up(
    user, use_openai, monkeypatch, created_at_the_provider
):
    memories = stale_memories(user, ["one", "two"])

    def die(**kwargs):
        raise SystemExit("worker killed")

    client = batch_api.get_provider().client
    with monkeypatch.context() as patch:
        if created_at_the_provider:
            # The provider made the batch; the worker died before writing down its id.
            original = client.batches.create

            def create_then_die(**kwargs):
                original(**kwargs)
                raise SystemExit("worker killed")

            patch.setattr(client.batches, "create", create_then_die)
        else:
            patch.setattr(client.batches, "create", die)  # died before the provider heard
        with pytest.raises(SystemExit):
            batch_api.batch_submit(limit=10)
    assert AIBatch.objects.filter(status=BatchStatus.SUBMITTING).count() == 1
    assert DailyBudget.objects.get().reserved_cents > 0
    assert batch_api.batches_poll().abandoned == 0  # not yet: its submitter may be slow

    later = timezone.now() + batch_api.SUBMIT_TIMEOUT + dt.timedelta(seconds=1)
    batch_api.batches_poll(now=later)
    batch = AIBatch.objects.get()
    if created_at_the_provider:
        assert batch.status == BatchStatus.OPEN and batch.provider_batch_id
        use_openai.batches_complete()
        batch_api.batches_poll()
        assert AIBatch.objects.get().status == BatchStatus.COMPLETED
        assert sorted(AICostRecord.objects.values_list("memory_id", flat=True)) == sorted(
            m.pk for m in memories
        )
    else:
        assert batch.status == BatchStatus.FAILED and "interrupted" in batch.error
        assert set(batch.items.values_list("state", flat=True)) == {BatchItemState.RELEASED}
        assert AICostRecord.objects.count() == 0
        assert embeddings_stale().count() == 2
    assert_books_agree()


def test_status_without_batch_api_is_refused():
    with pytest.raises(CommandError, match="use it with --batch-api"):
        call_command("enrich", "--status")


# --- at once, and across a real worker's death ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_pollers_at_once_apply_and_charge_each_memory_once(user, use_openai):
    memories = stale_memories(user, [f"memory {i}" for i in range(40)])
    batch_api.batch_submit(limit=100)
    use_openai.batches_complete()
    start = threading.Barrier(2)
    errors = []

    def poll():
        try:
            start.wait()
            batch_api.batches_poll()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    # Whichever finished the items ended the batch; the other found nothing left to take.
    assert AIBatch.objects.get().status == BatchStatus.COMPLETED
    assert AICostRecord.objects.count() == 40
    assert sorted(AICostRecord.objects.values_list("memory_id", flat=True)) == sorted(
        m.pk for m in memories
    )
    assert set(Embedding.objects.values_list("model", flat=True)) == {MODEL}
    assert_books_agree()


@pytest.mark.faults
@pytest.mark.django_db(transaction=True)
def test_the_batch_api_path_survives_a_worker_restart_mid_poll(
    user, use_openai, process_env, private_redis, started, tmp_path
):
    stub = use_openai
    env = {
        **process_env,
        "REDIS_URL": private_redis.url,
        "EMBEDDING_DIMENSIONS": "16",
        "OPENAI_BATCH_POLL_SECONDS": "1",
    }
    memories = stale_memories(user, [f"waiting for the batch {i}" for i in range(5)])
    assert batch_api.batch_submit(limit=10).sent == 5
    batch = AIBatch.objects.get()
    log = LOGS / "batch-api-restart.log"
    started(processes.celery_beat(env, schedule=tmp_path / "schedule", log=log))
    first = started(processes.celery_worker(env, name="batch-doomed", log=log))

    def polled() -> int:
        return len(stub.calls_to(f"/v1/batches/{batch.provider_batch_id}"))

    wait_for(lambda: polled() >= 1, timeout=60, what="the worker to poll the open batch")
    assert AIBatch.objects.get().status == BatchStatus.OPEN  # in progress: nothing to do yet

    stub.hold_downloads()  # the next poll gets stuck reading the results...
    stub.batches_complete()
    wait_for(
        lambda: any(c["path"].endswith("/content") for c in stub.calls),
        timeout=60,
        what="the worker to be reading the batch's results",
    )
    assert AIBatch.objects.get().status == BatchStatus.FINISHING
    first.kill()  # ...and its worker dies there (SIGKILL, children included)
    stub.hold_downloads(False)
    assert set(AIBatchItem.objects.values_list("state", flat=True)) == {BatchItemState.PENDING}
    assert AICostRecord.objects.count() == 0

    started(processes.celery_worker(env, name="batch-replacement", log=log))
    wait_for(
        lambda: AIBatch.objects.get().status == BatchStatus.COMPLETED,
        timeout=90,
        what="the new worker to finish the batch",
    )
    assert set(AIBatchItem.objects.values_list("state", flat=True)) == {BatchItemState.APPLIED}
    assert {(e.model, e.dimensions) for e in Embedding.objects.all()} == {(MODEL, 16)}
    assert sorted(AICostRecord.objects.values_list("memory_id", flat=True)) == sorted(
        m.pk for m in memories
    )
    assert set(BudgetReservation.objects.values_list("state", flat=True)) == {"settled"}
    assert AICostRecord.objects.aggregate(t=Sum("cost_cents"))["t"] == batch_cost(
        [m.text_content for m in memories]
    )
    # Polling again applies and charges nothing more.
    batch_api.batches_poll()
    assert AICostRecord.objects.count() == 5
    assert_books_agree()
