"""Search: semantic, keyword and hybrid over one user's live memories, metered and degraded."""

from __future__ import annotations

import random

import pytest
from django.db import connection

from conftest import client_for
from costs import breaker, budget
from costs.models import AICostRecord
from enrichment.tests.conftest import wait_for
from memories import search
from memories.models import Embedding, EnrichmentStatus, Memory
from memories.services import embedding_save, memory_delete

URL = "/api/v1/memories/search"
MODEL = "text-embedding-3-small"
CONCEPTS = {"puppy": "dog", "dog": "dog", "canine": "dog", "automobile": "car", "car": "car"}


@pytest.fixture
def meaningful(use_openai):
    """The stub's embeddings carry meaning: puppy and dog share a concept, no letters."""
    use_openai.state.concepts = dict(CONCEPTS)
    return use_openai


def _remember(user, text: str, **fields) -> Memory:
    """A memory with its embedding from the (stub) provider, as the pipeline would store it."""
    from enrichment.providers import get_provider

    memory = Memory.objects.create(user=user, text_content=text, **fields)
    result = get_provider().embed(text)
    embedding_save(
        memory_id=memory.pk, model=result.model, dimensions=result.dimensions, vector=result.vector
    )
    Memory.objects.filter(pk=memory.pk).update(enrichment_status=EnrichmentStatus.ENRICHED)
    return memory


def _ids(body: dict) -> list[str]:
    return [hit["memory"]["textContent"] for hit in body["results"]]


@pytest.mark.django_db
def test_it_finds_a_synonym_with_no_shared_letters_by_meaning(api, user, meaningful):
    _remember(user, "Walked the dog in the park")
    _remember(user, "Fixed the automobile brakes")
    semantic = api.get(URL, {"q": "puppy", "mode": "semantic"}).json()
    assert _ids(semantic)[0] == "Walked the dog in the park"
    assert semantic["results"][0]["explain"]["semantic"]["rank"] == 1
    assert semantic["results"][0]["explain"]["keyword"] is None
    hybrid = api.get(URL, {"q": "puppy"}).json()
    assert hybrid["mode"] == "hybrid" and hybrid["degraded"] is None
    assert _ids(hybrid)[0] == "Walked the dog in the park"
    # RRF with k = 60: rank 1 in one list only.
    assert hybrid["results"][0]["score"] == pytest.approx(1 / 61)
    keyword = api.get(URL, {"q": "puppy", "mode": "keyword"}).json()
    assert keyword["results"] == []


@pytest.mark.django_db
def test_it_finds_an_exact_token_by_keyword_and_hybrid(api, user, meaningful):
    _remember(user, "Paid invoice INV-88231 to the plumber")
    _remember(user, "Invoice INV-88230 is still open")
    for mode in ("keyword", "hybrid"):
        body = api.get(URL, {"q": "INV-88231", "mode": mode}).json()
        matched = [h for h in body["results"] if h["explain"]["keyword"]]
        assert [h["memory"]["textContent"] for h in matched] == [
            "Paid invoice INV-88231 to the plumber"
        ]
        assert _ids(body)[0] == "Paid invoice INV-88231 to the plumber"


@pytest.mark.django_db
def test_it_stems_words_in_the_configured_language(api, user, meaningful):
    _remember(user, "Running shoes for the marathon")
    body = api.get(URL, {"q": "run", "mode": "keyword"}).json()
    assert _ids(body) == ["Running shoes for the marathon"]


@pytest.mark.django_db
def test_it_never_returns_another_users_or_deleted_memories(api, user, make_user, meaningful):
    other = make_user("bob@example.com")
    _remember(other, "My dog barks at the dog next door")
    gone = _remember(user, "The dog we had")
    memory_delete(memory=gone)
    for mode in ("hybrid", "semantic", "keyword"):
        body = api.get(URL, {"q": "dog", "mode": mode}).json()
        assert body["results"] == [], mode


@pytest.mark.django_db
def test_it_finds_memories_not_yet_embedded_by_keyword(api, user, meaningful):
    Memory.objects.create(user=user, text_content="Call the dentist about the crown")
    body = api.get(URL, {"q": "dentist"}).json()
    assert _ids(body) == ["Call the dentist about the crown"]
    assert body["results"][0]["explain"]["semantic"] is None


@pytest.mark.django_db
def test_it_applies_the_list_filters(api, user, meaningful):
    _remember(user, "Dog food on sale", type="task", category="shopping", tags=["pets"])
    _remember(user, "Dog show on Sunday", type="event", category="entertainment", tags=[])
    assert _ids(api.get(URL, {"q": "dog", "type": "task"}).json()) == ["Dog food on sale"]
    assert _ids(api.get(URL, {"q": "dog", "category": "entertainment"}).json()) == [
        "Dog show on Sunday"
    ]
    assert _ids(api.get(URL, {"q": "dog", "tag": "pets"}).json()) == ["Dog food on sale"]


@pytest.mark.django_db
def test_it_meters_the_query_embedding_and_caches_it(api, user, meaningful):
    _remember(user, "Walked the dog")
    meaningful.state.calls.clear()
    api.get(URL, {"q": "puppy"})
    api.get(URL, {"q": "  Puppy "})  # the same normalised query
    assert len(meaningful.calls_to("/v1/embeddings")) == 1
    record = AICostRecord.objects.get(user=user, memory_id__isnull=True)
    assert record.operation == "search"
    assert record.model == MODEL and record.input_tokens > 0


@pytest.mark.django_db
def test_it_answers_by_keyword_when_the_budget_breaker_is_open(api, user, meaningful):
    _remember(user, "Walked the dog")
    budget.budget_pause()
    meaningful.state.calls.clear()
    body = api.get(URL, {"q": "dog"}).json()
    assert body["degraded"] == "budget"
    assert _ids(body) == ["Walked the dog"]
    assert body["results"][0]["explain"]["semantic"] is None
    assert meaningful.calls_to("/v1/embeddings") == []
    response = api.get(URL, {"q": "dog", "mode": "semantic"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.json()["error"]["details"] == {"reason": "budget"}


@pytest.mark.django_db
def test_it_answers_by_keyword_when_the_provider_fails(api, user, meaningful, settings):
    _remember(user, "Walked the dog")
    meaningful.state.script.extend(["500"])
    body = api.get(URL, {"q": "dog"}).json()
    assert body["degraded"] == "provider" and _ids(body) == ["Walked the dog"]
    assert not AICostRecord.objects.filter(memory_id__isnull=True).exists()


@pytest.mark.django_db
def test_it_answers_by_keyword_when_the_provider_breaker_is_open(api, user, meaningful, settings):
    _remember(user, "Walked the dog")
    for _ in range(settings.AI_PROVIDER_FAILURE_THRESHOLD):
        breaker.provider_breaker_record_failure()
    body = api.get(URL, {"q": "dog"}).json()
    assert body["degraded"] == "provider" and _ids(body) == ["Walked the dog"]


@pytest.mark.django_db
def test_it_answers_by_keyword_when_the_users_cost_limit_is_reached(api, user, meaningful):
    _remember(user, "Walked the dog")
    user.daily_cost_limit_cents = 0.000001
    user.save(update_fields=["daily_cost_limit_cents"])
    api.get(URL, {"q": "first query"})  # spends a little, reaching the limit
    body = api.get(URL, {"q": "dog"}).json()
    assert body["degraded"] == "user_limit" and _ids(body) == ["Walked the dog"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [{}, {"q": ""}, {"q": "x" * 1001}, {"q": "dog", "limit": 0}, {"q": "dog", "limit": 51},
     {"q": "dog", "mode": "fuzzy"}, {"q": "dog", "createdAfter": "yesterday"}],
)  # fmt: skip
def test_it_refuses_bad_parameters_with_a_400(api, params):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.django_db
def test_it_lists_related_memories_without_an_ai_call(api, user, make_user, meaningful):
    walk = _remember(user, "Walked the dog")
    _remember(user, "Fixed the automobile")
    _remember(user, "The puppy slept all day")
    meaningful.state.calls.clear()
    body = api.get(f"/api/v1/memories/{walk.pk}/related", {"limit": 1}).json()
    assert _ids(body) == ["The puppy slept all day"]
    assert meaningful.calls_to("/v1/embeddings") == []
    other = make_user("bob@example.com")
    response = client_for(other).get(f"/api/v1/memories/{walk.pk}/related")
    assert response.status_code == 404


# --- per-user exactness on the HNSW index ---------------------------------------------------------

DIMS = 8


def _unit(rng: random.Random, centre: list[float], spread: float) -> list[float]:
    vector = [c + rng.gauss(0, spread) for c in centre]
    norm = sum(v * v for v in vector) ** 0.5
    return [v / norm for v in vector]


@pytest.fixture
def crowded(make_user):
    """One user with 5 memories among 3,000 of another user's, which all lie closer to the
    query: a post-filtered scan of ef_search index candidates finds none of the 5. For so few
    rows the planner rightly scans the user's rows exactly; here (inside the test's transaction)
    the btree indexes are dropped and sequential scans are off, so that it takes the HNSW path, as
    it does for a user with many rows."""
    rng = random.Random(7)  # noqa: S311 - test data
    mine, crowd = make_user("me@example.com"), make_user("crowd@example.com")
    query = _unit(rng, [1.0] * DIMS, 0.0)
    rows = []
    for owner, count, spread in ((crowd, 3000, 0.05), (mine, 5, 1.0)):
        memories = Memory.objects.bulk_create(
            Memory(user=owner, text_content=f"m{i}") for i in range(count)
        )
        centre = query if owner == crowd else [-1.0] * DIMS
        rows += [
            Embedding(
                memory=m,
                user=owner,
                model="bench",
                dimensions=DIMS,
                vector=_unit(rng, centre, spread),
            )
            for m in memories
        ]
    Embedding.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks: CREATE INDEX
        index = search.embedding_index_ensure(model="bench", dimensions=DIMS)
        cursor.execute("DROP INDEX embedding_user_model, embedding_model")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("ANALYZE memories_embedding")
    embedding = search.QueryEmbedding(vector=query, model="bench", dimensions=DIMS)
    return mine, embedding, index


def _exact(user, embedding) -> list:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT memory_id FROM memories_embedding WHERE user_id = %s "
            "ORDER BY vector <=> %s::vector, memory_id",
            [user.pk, search._vector_text(embedding.vector)],
        )
        return [row[0] for row in cursor.fetchall()]


def _index_scan(user, embedding, *, iterative: str, explain: bool = False) -> list:
    """The search's nearest-neighbour query on its own, with hnsw.iterative_scan as given."""
    sql = (
        f"SELECT memory_id FROM memories_embedding e WHERE e.user_id = %s "  # noqa: S608
        f"AND e.model = 'bench' AND e.dimensions = {DIMS} "
        f"ORDER BY (e.vector::vector({DIMS})) <=> %s::vector({DIMS}) LIMIT 10"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL hnsw.iterative_scan = {iterative}")  # noqa: S608
        cursor.execute("SET LOCAL hnsw.ef_search = 20")
        cursor.execute(
            ("EXPLAIN " if explain else "") + sql, [user.pk, search._vector_text(embedding.vector)]
        )
        rows = [row[0] for row in cursor.fetchall()]
        cursor.execute("RESET hnsw.iterative_scan")
    return rows


@pytest.mark.django_db
def test_it_answers_a_minority_user_in_full_through_the_hnsw_index(crowded, settings):
    mine, embedding, index = crowded
    settings.SEARCH_HNSW_EF_SEARCH = 20
    # Without iterative scans the index hands over 20 candidates, all the crowd's: short.
    assert len(_index_scan(mine, embedding, iterative="off")) < 5
    assert index in "\n".join(_index_scan(mine, embedding, iterative="off", explain=True))
    ranking = search.semantic_ranking(user_id=mine.pk, embedding=embedding, limit=10)
    assert [memory_id for memory_id, _ in ranking] == _exact(mine, embedding)
    assert len(ranking) == 5


@pytest.mark.django_db
def test_it_falls_back_to_an_exact_scan_when_the_index_scan_stops_early(
    crowded, settings, monkeypatch
):
    mine, embedding, _ = crowded
    settings.SEARCH_HNSW_EF_SEARCH = 10
    monkeypatch.setattr(search, "MAX_SCAN_TUPLES", 20)
    assert len(_index_scan(mine, embedding, iterative="relaxed_order")) <= 5
    ranking = search.semantic_ranking(user_id=mine.pk, embedding=embedding, limit=10)
    assert [memory_id for memory_id, _ in ranking] == _exact(mine, embedding)


# --- through the real pipeline --------------------------------------------------------------------


@pytest.mark.redis
def test_it_finds_a_memory_enriched_by_the_worker(meaningful, celery_worker, make_user):
    user = make_user("worker@example.com")
    api = client_for(user)
    memory_id = api.post(
        "/api/v1/memories", {"textContent": "Adopted a dog today"}, format="json"
    ).json()["id"]
    wait_for(
        lambda: Embedding.objects.filter(memory_id=memory_id).exists(),
        what="the memory to be embedded",
    )
    body = api.get(URL, {"q": "canine", "mode": "semantic"}).json()
    assert [hit["memory"]["id"] for hit in body["results"]] == [memory_id]
