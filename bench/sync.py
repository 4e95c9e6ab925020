"""Offline sync: push throughput (records per second through POST /api/v1/sync, each a real
memory_create with its enrichment job) and pull latency for 10,000 changes, for 10 changes on
top of them, and for a first sync of everything. In-process (Django's test client), PostgreSQL;
enrichment tasks go to an in-memory broker (no worker), or with `--broker redis` to the
benchmark's Redis (BENCH_REDIS_URL, flushed afterwards) as in production.

    .venv/bin/python bench/sync.py [--changes 10000] [--batch 500] [--runs 5] [--broker redis]

Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from harness import REDIS_URL, bench_env, django_setup, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--broker", choices=("memory", "redis"), default="memory")
    args = parser.parse_args()
    broker = "memory://" if args.broker == "memory" else REDIS_URL
    django_setup(bench_env(DJANGO_ALLOWED_HOSTS="testserver", CELERY_BROKER_URL=broker))
    from django.test import Client

    from accounts.models import User
    from accounts.services import tokens_for_user

    User.objects.filter(email="sync-bench@example.com").delete()
    user = User.objects.create_user(email="sync-bench@example.com", password=None)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {tokens_for_user(user)['accessToken']}")

    def pull(last) -> tuple[float, dict]:
        started = time.perf_counter()
        response = client.get("/api/v1/sync", {"last_pulled_at": last, "schema_version": 1})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.content  # noqa: S101
        return elapsed, response.json()

    def push(last, created) -> None:
        body = {"memories": {"created": created, "updated": [], "deleted": []}}
        response = client.post(
            f"/api/v1/sync?last_pulled_at={last}", json.dumps(body), "application/json"
        )
        assert response.status_code == 200, response.content  # noqa: S101

    def records(count: int, tag: str) -> list[dict]:
        return [
            {"id": str(uuid.uuid4()), "text_content": f"{tag} memory {n}: bought oat milk",
             "type": "note", "_status": "created", "_changed": ""}
            for n in range(count)
        ]  # fmt: skip

    start_cursor = pull("null")[1]["timestamp"]
    started = time.perf_counter()
    for offset in range(0, args.changes, args.batch):
        push(start_cursor, records(min(args.batch, args.changes - offset), "bench"))
    push_seconds = time.perf_counter() - started
    push_rate = args.changes / push_seconds

    def median_pull(last, expect: int) -> float:
        samples = []
        for _ in range(args.runs):
            elapsed, body = pull(last)
            assert len(body["changes"]["memories"]["updated"]) == expect  # noqa: S101
            samples.append(elapsed)
        return statistics.median(samples)

    many = median_pull(start_cursor, args.changes)
    cursor = pull(start_cursor)[1]["timestamp"]
    push(cursor, records(10, "late"))
    few = median_pull(cursor, 10)
    first = median_pull("null", args.changes + 10)

    print(
        f"push: {args.changes} records in batches of {args.batch}, {args.broker} broker: "
        f"{push_rate:,.0f} records/s"
    )
    print(f"pull {args.changes} changes: {many * 1000:.0f} ms (median of {args.runs})")
    print(f"pull 10 changes among {args.changes + 10} memories: {few * 1000:.1f} ms")
    print(f"first sync of {args.changes + 10} memories: {first * 1000:.0f} ms")
    write_results(
        "sync",
        {
            "changes": args.changes,
            "batch": args.batch,
            "broker": args.broker,
            "pushRecordsPerSecond": round(push_rate),
            "pullManyMs": round(many * 1000, 1),
            "pullTenMs": round(few * 1000, 1),
            "firstSyncMs": round(first * 1000, 1),
        },
    )
    User.objects.filter(pk=user.pk).delete()
    if args.broker == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
