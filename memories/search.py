"""Finding memories again: semantic (pgvector HNSW, cosine), keyword (a stored tsvector) and both
fused by reciprocal rank fusion, always over one user's live memories.

- Vectors: `memories_embedding.vector` has no fixed size; each (model, dimensions) in use has a
  partial HNSW index on `vector::vector(N)`. A user's nearest neighbours come from that index
  with pgvector 0.8's iterative scan, so a user whose rows are a small minority still gets a
  full answer; if the scan ever stops early (hnsw.max_scan_tuples), an exact scan of that user's
  rows answers instead: results never come back short.
- Keywords: `memories_memory.search_vector`, kept by a trigger as to_tsvector(SEARCH_LANGUAGE)
  || to_tsvector('simple'), matched by websearch_to_tsquery in both configurations.
- The query's embedding is one AI call, metered against the budget and cached; when it cannot be
  made (budget, user limit, provider) the search answers by keyword and says why.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction

from common.errors import DomainError
from costs import metering
from costs.budget import Refusal
from costs.models import Operation

from .models import Embedding, Memory

logger = logging.getLogger(__name__)

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.; also Elasticsearch's default)
MAX_LIMIT = 50
# Rows an iterative HNSW scan may visit before it gives up (pgvector's default is 20,000).
MAX_SCAN_TUPLES = 100_000

INDEX_PREFIX = "embedding_hnsw_"
_TRIGGER_FUNCTION = "memory_search_vector_update"


class Degraded:
    BUDGET = "budget"
    PROVIDER = "provider"
    USER_LIMIT = "user_limit"


_DEGRADED_BY_REFUSAL = {
    Refusal.PROVIDER_BREAKER: Degraded.PROVIDER,
    Refusal.USER_COST_LIMIT: Degraded.USER_LIMIT,
    Refusal.USER_ENRICHMENT_LIMIT: Degraded.USER_LIMIT,
}


class SemanticUnavailableError(DomainError):
    status_code = 503
    code = "service_unavailable"


@dataclass(frozen=True)
class QueryEmbedding:
    vector: list[float]
    model: str
    dimensions: int


@dataclass
class Filters:
    type: str | None = None
    category: str | None = None
    tag: str | None = None
    created_after: object = None
    created_before: object = None


@dataclass
class Hit:
    memory: Memory | None
    score: float
    semantic: dict | None = None
    keyword: dict | None = None


@dataclass
class SearchResult:
    query: str
    mode: str
    degraded: str | None
    hits: list[Hit] = field(default_factory=list)


# --- schema kept after every migrate --------------------------------------------------------


def _vector_expression(language: str) -> str:
    return (
        f"to_tsvector('{language}'::regconfig, coalesce(NEW.text_content, '')) || "
        "to_tsvector('simple'::regconfig, coalesce(NEW.text_content, ''))"
    )


def search_schema_ensure(*, using: str = "default", **kwargs) -> None:
    """The tsvector trigger in the SEARCH_LANGUAGE configuration. When the configuration is new
    (or changed), every memory's vector is recomputed; rows without one are always filled."""
    language = settings.SEARCH_LANGUAGE
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", [language])
        if cursor.fetchone() is None:
            raise ValueError(f"SEARCH_LANGUAGE={language!r} is not a PostgreSQL text configuration")
        cursor.execute(
            "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p WHERE p.proname = %s",
            [_TRIGGER_FUNCTION],
        )
        row = cursor.fetchone()
        changed = row is None or row[0] != language
        if changed:
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION {_TRIGGER_FUNCTION}() RETURNS trigger "
                f"LANGUAGE plpgsql AS $$ BEGIN NEW.search_vector := "
                f"{_vector_expression(language)}; RETURN NEW; END $$"
            )
            cursor.execute(f"COMMENT ON FUNCTION {_TRIGGER_FUNCTION}() IS %s", [language])
            cursor.execute(
                "CREATE OR REPLACE TRIGGER memory_search_vector BEFORE INSERT OR UPDATE OF "
                f"text_content ON memories_memory FOR EACH ROW EXECUTE FUNCTION "
                f"{_TRIGGER_FUNCTION}()"
            )
        # The trigger fires on UPDATE OF text_content: assigning the column to itself refreshes.
        where = "" if changed else " WHERE search_vector IS NULL"
        cursor.execute(f"UPDATE memories_memory SET text_content = text_content{where}")  # noqa: S608


def _index_name(model: str, dimensions: int) -> str:
    digest = hashlib.sha256(f"{model}:{dimensions}".encode()).hexdigest()[:12]
    return f"{INDEX_PREFIX}{digest}"


def embedding_index_ensure(*, model: str, dimensions: int, using: str = "default") -> str:
    """A partial HNSW cosine index for the rows of one (model, dimensions); returns its name."""
    name = _index_name(model, dimensions)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON memories_embedding USING hnsw "
            f"((vector::vector({int(dimensions)})) vector_cosine_ops) "
            f"WITH (m = {int(settings.SEARCH_HNSW_M)}, "
            f"ef_construction = {int(settings.SEARCH_HNSW_EF_CONSTRUCTION)}) "
            f"WHERE model = %s AND dimensions = {int(dimensions)}",
            [model],
        )
    return name


# --- the metered query embedding ----------------------------------------------------------------


def normalise_query(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _cache_key(text: str, model: str, dimensions: int | None) -> str:
    raw = f"{model}\x00{dimensions}\x00{normalise_query(text).casefold()}"
    return "search:qe:" + hashlib.sha256(raw.encode()).hexdigest()


def search_embed_metered(*, user, text: str) -> tuple[QueryEmbedding | None, str | None]:
    """The query's embedding, or (None, why not): one AI call through the metering door of
    costs (ledger operation "search"), cached per normalised query and model."""
    # The provider is enrichment's; imported here, not at module level, so that loading
    # memories never loads enrichment (which imports memories).
    from enrichment.providers import ProviderError, get_provider
    from enrichment.providers.metered import metered_call

    provider = get_provider()
    key = _cache_key(text, provider.embedding_model, provider.embedding_dimensions)
    cached = cache.get(key)
    if cached is not None:
        return QueryEmbedding(**cached), None
    try:
        result = metered_call(
            provider=provider,
            operation=Operation.SEARCH,
            model=provider.embedding_model,
            estimate=provider.estimate_embedding_tokens(text),
            call=lambda: provider.embed(text),
            user_id=user.pk,
        )
    except metering.Refused as refused:
        return None, _DEGRADED_BY_REFUSAL.get(refused.reason, Degraded.BUDGET)
    except ProviderError as error:
        logger.warning("search: query embedding failed, answering by keyword: %s", error)
        return None, Degraded.PROVIDER
    embedding = QueryEmbedding(
        vector=list(result.vector), model=result.model, dimensions=result.dimensions
    )
    cache.set(key, embedding.__dict__, settings.SEARCH_QUERY_CACHE_SECONDS)
    return embedding, None


# --- the queries (SQL text: integers and fixed fragments only; values are parameters) -----


def _filter_sql(filters: Filters, alias: str = "m") -> tuple[str, list]:
    clauses, params = [], []
    if filters.type:
        clauses.append(f"{alias}.type = %s")
        params.append(filters.type)
    if filters.category:
        clauses.append(f"{alias}.category = %s")
        params.append(filters.category)
    if filters.tag:
        clauses.append(f"{alias}.tags @> jsonb_build_array(%s::text)")
        params.append(filters.tag)
    if filters.created_after:
        clauses.append(f"{alias}.created_at > %s")
        params.append(filters.created_after)
    if filters.created_before:
        clauses.append(f"{alias}.created_at < %s")
        params.append(filters.created_before)
    return "".join(f" AND {c}" for c in clauses), params


def _vector_text(vector: list[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def semantic_ranking(
    *,
    user_id: int,
    embedding: QueryEmbedding,
    limit: int,
    filters: Filters | None = None,
    exclude_memory_id=None,
) -> list[tuple[object, float]]:
    """(memory id, cosine similarity) of the user's live memories nearest to the vector, best
    first: min(limit, eligible rows) of them, never fewer."""
    dims = int(embedding.dimensions)
    where, params = _filter_sql(filters or Filters())
    if exclude_memory_id is not None:
        where += " AND e.memory_id <> %s"
        params.append(exclude_memory_id)
    query = _vector_text(embedding.vector)
    base = (
        "FROM memories_embedding e JOIN memories_memory m ON m.id = e.memory_id "
        f"WHERE e.user_id = %s AND e.model = %s AND e.dimensions = {dims} "
        f"AND m.deleted_at IS NULL{where}"
    )
    base_params = [user_id, embedding.model, *params]
    # The indexed expression (vector::vector(N)) lets the planner use the HNSW index; relaxed
    # order is re-sorted by the outer query, as pgvector recommends.
    indexed = (
        f"WITH nearest AS MATERIALIZED (SELECT e.memory_id, "  # noqa: S608
        f"(e.vector::vector({dims})) <=> %s::vector({dims}) AS distance {base} "
        f"ORDER BY (e.vector::vector({dims})) <=> %s::vector({dims}) LIMIT %s) "
        "SELECT memory_id, 1 - distance FROM nearest ORDER BY distance, memory_id"
    )
    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(f"SET LOCAL hnsw.ef_search = {int(settings.SEARCH_HNSW_EF_SEARCH)}")
        cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        cursor.execute(indexed, [query, *base_params, query, limit])
        rows = cursor.fetchall()
        if len(rows) < limit:
            eligible = f"SELECT count(*) FROM (SELECT 1 {base} LIMIT %s) c"  # noqa: S608
            cursor.execute(eligible, [*base_params, limit])
            if cursor.fetchone()[0] > len(rows):
                # The scan stopped early: the exact answer from this user's rows (the plain
                # column matches no index, so this is a scan of the user's rows only).
                logger.info("search: iterative index scan came back short; exact scan")
                cursor.execute(
                    f"SELECT e.memory_id, 1 - (e.vector <=> %s::vector) AS similarity {base} "
                    "ORDER BY e.vector <=> %s::vector, e.memory_id LIMIT %s",
                    [query, *base_params, query, limit],
                )
                rows = cursor.fetchall()
    return [(memory_id, float(similarity)) for memory_id, similarity in rows]


def keyword_ranking(
    *, user_id: int, text: str, limit: int, filters: Filters | None = None
) -> list[tuple[object, float]]:
    """(memory id, ts_rank_cd) of the user's live memories matching the words, best first."""
    where, params = _filter_sql(filters or Filters())
    language = settings.SEARCH_LANGUAGE
    sql = (
        "SELECT m.id, ts_rank_cd(m.search_vector, q.query) AS rank FROM memories_memory m, "  # noqa: S608
        "(SELECT websearch_to_tsquery(%s::regconfig, %s) || "
        "websearch_to_tsquery('simple'::regconfig, %s) AS query) q "
        "WHERE m.user_id = %s AND m.deleted_at IS NULL AND m.search_vector @@ q.query"
        f"{where} ORDER BY rank DESC, m.created_at DESC, m.id LIMIT %s"
    )
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, [language, text, text, user_id, *params, limit])
        return [(memory_id, float(rank)) for memory_id, rank in cursor.fetchall()]


def _fuse(semantic: list, keyword: list, limit: int) -> list[Hit]:
    hits: dict[object, Hit] = {}
    for rank, (memory_id, similarity) in enumerate(semantic, start=1):
        hit = hits.setdefault(memory_id, Hit(memory=None, score=0.0))
        hit.score += 1 / (RRF_K + rank)
        hit.semantic = {"rank": rank, "similarity": round(similarity, 4)}
    for rank, (memory_id, score) in enumerate(keyword, start=1):
        hit = hits.setdefault(memory_id, Hit(memory=None, score=0.0))
        hit.score += 1 / (RRF_K + rank)
        hit.keyword = {"rank": rank, "score": round(score, 4)}
    ordered = sorted(
        hits.items(),
        key=lambda item: (
            -item[1].score,
            (item[1].semantic or {}).get("rank", 10**9),
            (item[1].keyword or {}).get("rank", 10**9),
        ),
    )
    for memory_id, hit in ordered:
        hit.memory = memory_id  # replaced by the row in _attach
    return [hit for _, hit in ordered[:limit]]


def _attach(hits: list[Hit]) -> list[Hit]:
    rows = Memory.objects.alive().in_bulk([hit.memory for hit in hits])
    kept = []
    for hit in hits:
        memory = rows.get(hit.memory)
        if memory is not None:  # deleted between the ranking and now
            hit.memory = memory
            kept.append(hit)
    return kept


def memories_search(
    *, user, query: str, mode: str = "hybrid", limit: int = 10, filters: Filters | None = None
) -> SearchResult:
    """Search the user's live memories. Semantic needs the query's embedding; without it hybrid
    answers by keyword (`degraded` says why) and semantic raises SemanticUnavailableError."""
    filters = filters or Filters()
    embedding, degraded = (None, None)
    if mode in ("hybrid", "semantic"):
        embedding, degraded = search_embed_metered(user=user, text=query)
        if embedding is None and mode == "semantic":
            raise SemanticUnavailableError(
                f"Semantic search is unavailable right now ({degraded}); try mode=keyword.",
                details={"reason": degraded},
            )
    semantic = (
        semantic_ranking(user_id=user.pk, embedding=embedding, limit=limit, filters=filters)
        if embedding is not None
        else []
    )
    keyword = (
        keyword_ranking(user_id=user.pk, text=query, limit=limit, filters=filters)
        if mode in ("hybrid", "keyword")
        else []
    )
    if mode == "hybrid":
        hits = _fuse(semantic, keyword, limit)
    elif mode == "semantic":
        hits = [
            Hit(memory=mid, score=round(sim, 4), semantic={"rank": r, "similarity": round(sim, 4)})
            for r, (mid, sim) in enumerate(semantic, start=1)
        ]
    else:
        hits = [
            Hit(memory=mid, score=round(rank, 4), keyword={"rank": r, "score": round(rank, 4)})
            for r, (mid, rank) in enumerate(keyword, start=1)
        ]
    return SearchResult(query=query, mode=mode, degraded=degraded, hits=_attach(hits))


def memories_related(*, user, memory: Memory, limit: int = 10) -> list[Hit]:
    """The user's live memories nearest to this memory's stored vector (no AI call); empty when
    it has no embedding yet."""
    stored = Embedding.objects.filter(memory_id=memory.pk).first()
    if stored is None:
        return []
    embedding = QueryEmbedding(
        vector=list(stored.vector), model=stored.model, dimensions=stored.dimensions
    )
    ranking = semantic_ranking(
        user_id=user.pk, embedding=embedding, limit=limit, exclude_memory_id=memory.pk
    )
    hits = [
        Hit(memory=mid, score=round(sim, 4), semantic={"rank": r, "similarity": round(sim, 4)})
        for r, (mid, sim) in enumerate(ranking, start=1)
    ]
    return _attach(hits)
