"""Changing the embedding model: memories embedded by the old one are re-embedded through the
budget, after new work, by beat's batches or `manage.py reembed`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from costs import budget
from costs.models import AICostRecord, UserUsage
from enrichment import services
from enrichment.models import EnrichmentJob
from enrichment.providers import reset_provider_cache
from enrichment.selectors import embeddings_stale, reembedding_progress
from memories.models import Embedding
from memories.services import memory_create

pytestmark = pytest.mark.django_db


def enriched_by_the_local_provider(user, count: int) -> list:
    memories = []
    for i in range(count):
        memory = memory_create(user=user, text_content=f"Old model memory {i}", type="note")
        job = EnrichmentJob.objects.get(memory=memory)
        assert services.job_process(job_id=job.pk, worker="test") == "completed"
        memories.append(memory)
    return memories


def test_a_model_change_re_embeds_old_rows_through_the_budget(user, settings, use_openai):
    settings.AI_PROVIDER = "local"
    reset_provider_cache()
    memories = enriched_by_the_local_provider(user, 3)
    usage_before = UserUsage.objects.get(user=user).enrichments
    settings.AI_PROVIDER = "openai"  # the operator switches model and restarts
    reset_provider_cache()
    assert reembedding_progress() == {
        "pending": 3,
        "model": "text-embedding-3-small",
        "dimensions": 16,
    }
    out = StringIO()
    call_command("reembed", stdout=out)
    assert "Re-embedded 3 memories; 0 left." in out.getvalue()
    rows = Embedding.objects.filter(memory__in=memories)
    assert {(row.model, row.dimensions) for row in rows} == {("text-embedding-3-small", 16)}
    ledger = AICostRecord.objects.filter(provider="openai", operation="embedding")
    assert sorted(ledger.values_list("memory_id", flat=True)) == sorted(m.pk for m in memories)
    assert UserUsage.objects.get(user=user).enrichments == usage_before  # not enrichment runs
    # One request for the batch, each memory's text once.
    assert len(use_openai.calls_to("/v1/embeddings")) == 1
    assert sorted(use_openai.embedded_texts()) == [f"Old model memory {i}" for i in range(3)]
    call_command("reembed", stdout=out)  # nothing left: no call
    assert len(use_openai.calls_to("/v1/embeddings")) == 1


def test_background_re_embedding_waits_for_new_work_and_for_the_budget(user, settings, use_openai):
    settings.AI_PROVIDER = "local"
    reset_provider_cache()
    enriched_by_the_local_provider(user, 2)
    settings.AI_PROVIDER = "openai"
    reset_provider_cache()
    waiting = memory_create(user=user, text_content="A new memory comes first", type="note")
    assert services.embeddings_refresh(limit=10) == services.ReembedResult(0, "busy")
    job = EnrichmentJob.objects.get(memory=waiting)
    assert services.job_process(job_id=job.pk, worker="test") == "completed"

    budget.budget_pause()
    assert services.embeddings_refresh(limit=10) == services.ReembedResult(0, "budget_paused")
    assert embeddings_stale().count() == 2
    budget.budget_resume()
    assert services.embeddings_refresh(limit=1) == services.ReembedResult(1)  # one batch
    assert services.embeddings_refresh(limit=10) == services.ReembedResult(1)
    assert embeddings_stale().count() == 0


def test_it_stops_when_the_provider_answers_another_model_than_configured(
    user, settings, use_openai
):
    settings.AI_PROVIDER = "local"
    reset_provider_cache()
    enriched_by_the_local_provider(user, 2)
    settings.AI_PROVIDER = "openai"
    use_openai.state.embedding_model_answer = "proxy-renamed-embedder"
    reset_provider_cache()
    result = services.embeddings_refresh(limit=10, when_idle=False)
    assert result.done == 0 and "not the configured model" in result.stopped
    assert len(use_openai.calls_to("/v1/embeddings")) == 1  # one call, never a loop
