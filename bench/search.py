"""Memory search at scale: N users x M memories with clustered vectors at the default dimensions,
the HNSW index built as the app builds it, then p50/p95 of semantic, keyword and hybrid through
SQL (memories.search's ranking functions) and through the API (GET /api/v1/memories/search with a
JWT, Django's test Client), and recall@10 of semantic against an exact scan of the same user's
rows. Aim (issue 12): recall@10 >= 0.95 and semantic p95 < 50 ms through SQL.

    .venv/bin/python bench/search.py [--users 10] [--memories 20000] [--queries 200]
                                     [--api-queries 60] [--dimensions 512] [--clusters 200]

The provider is configured as OpenAI's (text-embedding-3-small at --dimensions, the production
default) with an address that answers nothing: every query's embedding is put in the query cache
first, so no search makes a network call (a search that tried would come back degraded, and the
run stops). Vectors: random cluster centres plus gaussian noise, normalised; each memory's text
is drawn from its cluster's topic words, so keyword search has realistic work. Not a test.
"""

from __future__ import annotations

import argparse
import math
import random
import time
import uuid

from harness import bench_env, django_setup, percentile, write_results

MODEL = "text-embedding-3-small"
# Topic words: each cluster takes a few of these as its theme; GENERIC words pad every text.
TOPICS = [
    "meeting deadline project client office report email standup deploy sprint manager",
    "doctor dentist gym workout medicine sleep headache hospital yoga diet therapy",
    "bank money budget invoice tax salary rent bill payment invest loan insurance mortgage",
    "course book study lecture tutorial class exam language research paper thesis",
    "flight hotel trip airport train passport visa vacation holiday beach parking",
    "recipe dinner lunch breakfast restaurant cook coffee meal pizza bake soup",
    "groceries milk store order purchase return bread cheese apples detergent",
    "mom dad friend birthday wife husband partner family kids sister brother wedding",
    "movie film music concert game show series podcast album song theatre",
    "idea startup invent brainstorm prototype sketch product pitch market",
    "garden plants tomatoes roses soil compost watering seeds hedge lawn",
    "car tyres garage mechanic oil service insurance petrol brakes battery",
    "laptop keyboard monitor backup password router printer update software",
    "dog cat vet walk leash food treats grooming kennel adoption",
    "apartment landlord lease plumber heating repair paint furniture moving",
]
GENERIC = (
    "remember to check the next week before friday after work with about again maybe call "
    "send book pick up buy ask note later today tomorrow morning evening soon really need"
).split()
NAMES = "Anna Ben Chloe David Emma Farid Grace Hugo Ines Jonas Kira Leo Maya Noah Omar".split()


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def make_text(rng: random.Random, topic: list[str], i: int) -> str:
    words = rng.sample(topic, 3) + rng.sample(GENERIC, 4)
    rng.shuffle(words)
    text = " ".join(words).capitalize()
    if rng.random() < 0.3:
        text += f" with {rng.choice(NAMES)}"
    if rng.random() < 0.1:
        text += f" ref INV-{i:06d}"
    return text


def seed(*, users: int, per_user: int, dims: int, clusters: int, noise: float, rng) -> dict:
    """Users, memories (COPY) and their embeddings (generated in SQL from the cluster centres,
    so 10^8 floats never cross the wire); returns the centres and the users."""
    from django.db import connection

    from accounts.models import User

    topics = [t.split() for t in TOPICS]
    cluster_topic = [rng.randrange(len(topics)) for _ in range(clusters)]
    centres = [unit([rng.gauss(0, 1) for _ in range(dims)]) for _ in range(clusters)]
    from memories.search import _index_name

    with connection.cursor() as cursor:
        # No HNSW index while loading (it is built once afterwards, and timed).
        cursor.execute(f"DROP INDEX IF EXISTS {_index_name(MODEL, dims)}")
        cursor.execute(
            "TRUNCATE ai_cost_tracking, enrichment_enrichmentjob, memories_embedding, "
            "memories_memory, memories_idempotencykey, user_usage CASCADE"
        )
    run = uuid.uuid4().hex[:8]
    people = User.objects.bulk_create(
        [User(email=f"search-{run}-{n}@example.com") for n in range(users)]
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's cursor, for COPY
        cursor.execute("CREATE TEMP TABLE bench_centre (cluster int PRIMARY KEY, centre float8[])")
        with raw.copy("COPY bench_centre (cluster, centre) FROM STDIN") as copy:
            for c, centre in enumerate(centres):
                copy.write_row((c, centre))
        cursor.execute("CREATE TEMP TABLE bench_cluster (memory_id uuid, cluster int)")
        with (
            raw.copy(
                "COPY memories_memory (id, user_id, text_content, type, category, tags, "
                "enrichment_status, enriched_at, created_at, updated_at, deleted_at) FROM STDIN"
            ) as copy,
        ):
            rows_cluster = []
            i = 0
            for person in people:
                for _ in range(per_user):
                    memory_id = uuid.uuid4()
                    c = rng.randrange(clusters)
                    rows_cluster.append((memory_id, c))
                    created = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d} 12:00+00"
                    deleted = created if rng.random() < 0.01 else None  # 1 % soft-deleted
                    copy.write_row(
                        (memory_id, person.pk, make_text(rng, topics[cluster_topic[c]], i),
                         "note", "other", "[]", "enriched", created, created, created, deleted)
                    )  # fmt: skip
                    i += 1
        with raw.copy("COPY bench_cluster (memory_id, cluster) FROM STDIN") as copy:
            for row in rows_cluster:
                copy.write_row(row)
        memories_s = time.perf_counter() - started
        started = time.perf_counter()
        # centre + N(0, noise^2/dims) per coordinate, normalised (pgvector's l2_normalize).
        cursor.execute(
            "INSERT INTO memories_embedding (memory_id, user_id, model, dimensions, vector, "
            "created_at) SELECT m.id, m.user_id, %s, %s, l2_normalize(ARRAY(SELECT "
            "c + random_normal(0, %s) FROM unnest(k.centre) c)::vector), now() "
            "FROM memories_memory m JOIN bench_cluster b ON b.memory_id = m.id "
            "JOIN bench_centre k ON k.cluster = b.cluster",
            [MODEL, dims, noise / math.sqrt(dims)],
        )
        embeddings_s = time.perf_counter() - started
        cursor.execute("ANALYZE memories_memory, memories_embedding")
    return {
        "people": people,
        "centres": centres,
        "clusterTopic": cluster_topic,
        "topics": topics,
        "memoriesSeconds": memories_s,
        "embeddingsSeconds": embeddings_s,
    }


def index_build(dims: int, work_mem: str) -> dict:
    """Drop and build the HNSW index exactly as the post-migrate hook does (its parameters come
    from settings), with this session's maintenance_work_mem (pgvector builds fastest when the
    graph fits in it); time it and measure it."""
    from django.conf import settings
    from django.db import connection

    from memories.search import _index_name, embedding_index_ensure

    name = _index_name(MODEL, dims)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {name}")
        if work_mem:
            cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)", [work_mem])
        cursor.execute("SHOW maintenance_work_mem")
        work_mem = cursor.fetchone()[0]
        cursor.execute("SHOW max_parallel_maintenance_workers")
        workers = cursor.fetchone()[0]
    started = time.perf_counter()
    embedding_index_ensure(model=MODEL, dimensions=dims)
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
        size = cursor.fetchone()[0]
    return {
        "name": name,
        "m": settings.SEARCH_HNSW_M,
        "efConstruction": settings.SEARCH_HNSW_EF_CONSTRUCTION,
        "efSearch": settings.SEARCH_HNSW_EF_SEARCH,
        "maintenanceWorkMem": work_mem,
        "maxParallelMaintenanceWorkers": workers,
        "buildSeconds": round(seconds, 1),
        "sizeMB": round(size / 2**20, 1),
    }


def make_queries(seeded: dict, count: int, dims: int, noise: float, rng) -> list[dict]:
    """(user, text, vector): a cluster's topic words as text, near its centre as vector."""
    queries = []
    for n in range(count):
        c = rng.randrange(len(seeded["centres"]))
        centre = seeded["centres"][c]
        vector = unit([v + rng.gauss(0, noise / math.sqrt(dims)) for v in centre])
        words = rng.sample(seeded["topics"][seeded["clusterTopic"][c]], rng.choice((1, 2)))
        queries.append(
            {"user": seeded["people"][n % len(seeded["people"])], "text": " ".join(words),
             "vector": vector}
        )  # fmt: skip
    return queries


def exact_top(user_id: int, vector: list[float], dims: int, limit: int = 10) -> list:
    """The exact nearest: the plain column matches no index, so this scans the user's rows."""
    from django.db import connection

    from memories.search import _vector_text

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.memory_id FROM memories_embedding e JOIN memories_memory m ON "
            "m.id = e.memory_id WHERE e.user_id = %s AND e.model = %s AND e.dimensions = %s "
            "AND m.deleted_at IS NULL ORDER BY e.vector <=> %s::vector, e.memory_id LIMIT %s",
            [user_id, MODEL, dims, _vector_text(vector), limit],
        )
        return [row[0] for row in cursor.fetchall()]


def plan_uses_index(user_id: int, vector: list[float], dims: int, ef_search: int) -> bool:
    """Whether the planner picks the HNSW index for semantic_ranking's query under its session
    settings (pgvector's cost estimate grows with ef_search: past some value the planner prefers
    the exact scan of the user's rows)."""
    from django.db import connection, transaction

    from memories.search import MAX_SCAN_TUPLES, _vector_text

    q = _vector_text(vector)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        cursor.execute(
            f"EXPLAIN SELECT e.memory_id FROM memories_embedding e JOIN memories_memory m ON "  # noqa: S608
            f"m.id = e.memory_id WHERE e.user_id = %s AND e.model = %s AND e.dimensions = {dims} "
            f"AND m.deleted_at IS NULL ORDER BY (e.vector::vector({dims})) <=> "
            f"%s::vector({dims}) LIMIT 10",
            [user_id, MODEL, q],
        )
        return any("embedding_hnsw_" in row[0] for row in cursor.fetchall())


def ms(samples: list[float]) -> dict:
    return {
        "p50Ms": round(percentile(samples, 0.5) * 1000, 1),
        "p95Ms": round(percentile(samples, 0.95) * 1000, 1),
    }


def time_sql(queries: list[dict], dims: int) -> tuple[dict, float]:
    from memories.search import QueryEmbedding, _fuse, keyword_ranking, semantic_ranking

    samples: dict[str, list[float]] = {"semantic": [], "keyword": [], "hybrid": []}
    recalls = []
    for q in queries:
        uid = q["user"].pk
        embedding = QueryEmbedding(vector=q["vector"], model=MODEL, dimensions=dims)
        started = time.perf_counter()
        semantic = semantic_ranking(user_id=uid, embedding=embedding, limit=10)
        samples["semantic"].append(time.perf_counter() - started)
        started = time.perf_counter()
        keyword_ranking(user_id=uid, text=q["text"], limit=10)
        samples["keyword"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _fuse(
            semantic_ranking(user_id=uid, embedding=embedding, limit=10),
            keyword_ranking(user_id=uid, text=q["text"], limit=10),
            10,
        )
        samples["hybrid"].append(time.perf_counter() - started)
        q["exact"] = exact = set(exact_top(uid, q["vector"], dims))
        recalls.append(len(exact & {mid for mid, _ in semantic}) / max(1, len(exact)))
    return {mode: ms(s) for mode, s in samples.items()}, sum(recalls) / len(recalls)


def ef_search_sweep(queries: list[dict], dims: int, values: list[int]) -> list[dict]:
    """Semantic recall@10 and latency of the same queries at other hnsw.ef_search values (what
    SEARCH_HNSW_EF_SEARCH would buy); run after time_sql, which stores each exact answer."""
    from django.test import override_settings

    from memories.search import QueryEmbedding, semantic_ranking

    rows = []
    for ef in values:
        samples, recalls = [], []
        with override_settings(SEARCH_HNSW_EF_SEARCH=ef):
            for q in queries:
                embedding = QueryEmbedding(vector=q["vector"], model=MODEL, dimensions=dims)
                started = time.perf_counter()
                found = semantic_ranking(user_id=q["user"].pk, embedding=embedding, limit=10)
                samples.append(time.perf_counter() - started)
                recalls.append(len(q["exact"] & {mid for mid, _ in found}) / len(q["exact"]))
        q = queries[0]
        rows.append({"efSearch": ef, "recallAt10": round(sum(recalls) / len(recalls), 4),
                     "planUsesIndex": plan_uses_index(q["user"].pk, q["vector"], dims, ef),
                     **ms(samples)})  # fmt: skip
    return rows


def time_api(queries: list[dict], dims: int) -> dict:
    from django.core.cache import cache
    from django.test import Client

    from accounts.services import tokens_for_user
    from memories.search import QueryEmbedding, _cache_key

    clients = {}
    for q in queries:
        cache.set(
            _cache_key(q["text"], MODEL, dims),
            QueryEmbedding(vector=q["vector"], model=MODEL, dimensions=dims).__dict__,
            3600,
        )
        if q["user"].pk not in clients:
            token = tokens_for_user(q["user"])["accessToken"]
            clients[q["user"].pk] = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    samples: dict[str, list[float]] = {"semantic": [], "keyword": [], "hybrid": []}
    for mode in samples:
        for n, q in enumerate([queries[0], *queries]):  # the first is a warm-up
            client = clients[q["user"].pk]
            started = time.perf_counter()
            response = client.get("/api/v1/memories/search", {"q": q["text"], "mode": mode})
            elapsed = time.perf_counter() - started
            body = response.json()
            if response.status_code != 200 or body.get("degraded"):
                raise SystemExit(f"search {mode} answered {response.status_code}: {body}")
            if n:
                samples[mode].append(elapsed)
    return {mode: ms(s) for mode, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--memories", type=int, default=20_000, help="per user")
    parser.add_argument("--dimensions", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm / centre norm")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--api-queries", type=int, default=60)
    parser.add_argument(
        "--ef-search", default="40,200,300,400", help="other hnsw.ef_search values to compare"
    )
    parser.add_argument(
        "--maintenance-work-mem", default="1GB", help="for the index build; '' keeps the server's"
    )
    args = parser.parse_args()
    dims = args.dimensions
    django_setup(
        bench_env(
            DJANGO_ALLOWED_HOSTS="testserver",
            AI_PROVIDER="openai",
            OPENAI_API_KEY="bench-no-network",
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # discard port: nothing answers
            OPENAI_EMBEDDING_MODEL=MODEL,
            EMBEDDING_DIMENSIONS=str(dims),
        )
    )
    from django.conf import settings

    rng = random.Random(12)  # noqa: S311 - synthetic data
    total = args.users * args.memories
    seeded = seed(
        users=args.users, per_user=args.memories, dims=dims, clusters=args.clusters,
        noise=args.noise, rng=rng,
    )  # fmt: skip
    print(
        f"seeded {total} memories in {seeded['memoriesSeconds']:.0f} s, "
        f"their {dims}-d embeddings in {seeded['embeddingsSeconds']:.0f} s"
    )
    index = index_build(dims, args.maintenance_work_mem)
    print(f"HNSW (m={index['m']}, ef_construction={index['efConstruction']}): built in "
          f"{index['buildSeconds']} s, {index['sizeMB']} MB")  # fmt: skip
    queries = make_queries(seeded, args.queries, dims, args.noise, rng)
    uses_index = plan_uses_index(
        queries[0]["user"].pk, queries[0]["vector"], dims, settings.SEARCH_HNSW_EF_SEARCH
    )
    sql, recall = time_sql(queries, dims)
    api = time_api(queries[: args.api_queries], dims)
    sweep = ef_search_sweep(queries, dims, [int(v) for v in args.ef_search.split(",") if v])

    print(f"\n{'mode':<10}{'SQL p50':>9}{'SQL p95':>9}{'API p50':>9}{'API p95':>9}  (ms)")
    for mode in ("semantic", "keyword", "hybrid"):
        print(f"{mode:<10}{sql[mode]['p50Ms']:>9.1f}{sql[mode]['p95Ms']:>9.1f}"
              f"{api[mode]['p50Ms']:>9.1f}{api[mode]['p95Ms']:>9.1f}")  # fmt: skip
    print(f"recall@10 of semantic vs exact scan: {recall:.3f} (aim >= 0.95); "
          f"semantic SQL p95 {sql['semantic']['p95Ms']} ms (aim < 50 ms); "
          f"plan uses the HNSW index: {uses_index}")  # fmt: skip
    for row in sweep:
        print(f"  ef_search={row['efSearch']:<4} recall@10 {row['recallAt10']:.3f}, semantic SQL "
              f"p50 {row['p50Ms']} ms, p95 {row['p95Ms']} ms, "
              f"HNSW plan: {row['planUsesIndex']}")  # fmt: skip
    write_results(
        "search",
        {
            "users": args.users,
            "memoriesPerUser": args.memories,
            "memories": total,
            "softDeletedShare": 0.01,
            "model": MODEL,
            "dimensions": dims,
            "clusters": args.clusters,
            "noise": args.noise,
            "seedSeconds": {
                "memories": round(seeded["memoriesSeconds"], 1),
                "embeddings": round(seeded["embeddingsSeconds"], 1),
            },  # fmt: skip
            "index": index,
            "planUsesIndex": uses_index,
            "queries": {"sql": args.queries, "api": min(args.api_queries, args.queries)},
            "queryEmbedding": "pre-filled query cache (no provider call)",
            "sql": sql,
            "api": api,
            "recallAt10": round(recall, 4),
            "efSearchSweep": sweep,
            "aim": {"recallAt10": 0.95, "semanticSqlP95Ms": 50},
        },
    )


if __name__ == "__main__":
    main()
