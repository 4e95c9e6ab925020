"""Ingest benchmark: POST /api/v1/memories (JWT + Idempotency-Key) under gunicorn (2 workers) on
PostgreSQL, beside a minimal DRF endpoint that inserts one row, in the same run.

    .venv/bin/python bench/ingest.py [--requests 3000] [--concurrency 16] [--rounds 6]

A bounded load generator on loopback: a fixed number of requests from a fixed number of
keep-alive connections (threads); it stops by itself. Not a test. Afterwards both endpoints'
SQL is counted in this process (statements, savepoints, transactions per request).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
import uuid

from harness import bench_env, django_setup, percentile, write_results

from enrichment.testing import processes


def load(port: int, path: str, token: str, *, requests: int, concurrency: int, idem: bool):
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if idem:
                headers["Idempotency-Key"] = f"bench-{uuid.uuid4().hex}"
            body = json.dumps({"textContent": f"Ingest benchmark memory {i}", "type": "note"})
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                code = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if code != 201:
                    errors.append(code)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"path": path, "concurrency": concurrency, "latencies": latencies, "errors": errors,
            "wall": wall}  # fmt: skip


def summary(runs: list[dict]) -> dict:
    """The figures of one endpoint over its slices of the run."""
    latencies = [value for run in runs for value in run["latencies"]]
    errors = [code for run in runs for code in run["errors"]]
    wall = sum(run["wall"] for run in runs)
    return {
        "path": runs[0]["path"],
        "requests": len(latencies),
        "concurrency": runs[0]["concurrency"],
        "requestsPerSecond": round(len(latencies) / wall, 1),
        "p50Ms": round(statistics.median(latencies) * 1000, 1),
        "p99Ms": round(percentile(latencies, 0.99) * 1000, 1),
        "errors": len(errors),
        "errorCodes": sorted(set(errors)),
    }


def sql_per_request(token: str, path: str, *, idem: bool, requests: int = 50) -> dict:
    """What one POST to `path` costs in SQL, counted in this process through Django's test
    client (the code path gunicorn runs) by `bench.statement_count` (as the pipeline benchmark
    counts its workers), averaged over `requests` creates: statements, of them savepoints, and
    transactions."""
    from rest_framework.test import APIClient

    from bench import statement_count

    client = APIClient(HTTP_HOST="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    statement_count.install()
    statement_count.snapshot(reset=True)
    for i in range(requests):
        headers = {"HTTP_IDEMPOTENCY_KEY": f"count-{uuid.uuid4().hex}"} if idem else {}
        body = {"textContent": f"Statement count memory {i}", "type": "note"}
        response = client.post(path, body, format="json", **headers)
        if response.status_code != 201:
            raise RuntimeError(f"{path} answered {response.status_code}")
    counts = statement_count.snapshot(reset=True)
    savepoints = counts.get("sql_savepoint", 0) + counts.get("sql_release", 0)
    return {
        "statements": round(counts.get("statements", 0) / requests, 2),
        "savepoints": round(savepoints / requests, 2),
        "transactions": round(counts.get("transactions", 0) / requests, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="alternating slices per endpoint")
    args = parser.parse_args()

    env = bench_env(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",
    )
    django_setup(env)
    import redis
    from django.db import connection

    from accounts.models import User
    from accounts.services import tokens_for_user

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE memories_memory, memories_idempotencykey, user_usage CASCADE")
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    user, _ = User.objects.get_or_create(email="ingest@example.com")
    token = tokens_for_user(user)["accessToken"]

    port = processes.free_port()
    web = processes.gunicorn(env, port=port, workers=2).start()
    try:
        # Warm both endpoints (imports, connections) before measuring.
        for path, idem in (("/bench/floor", False), ("/api/v1/memories", True)):
            load(port, path, token, requests=100, concurrency=4, idem=idem)
        # Alternate slices of the two loads, so that a change in the machine's other load
        # (it is shared) falls on both alike and the ratio stays a same-run ratio.
        floor_runs, our_runs = [], []
        for _ in range(args.rounds):
            floor_runs.append(load(
                port, "/bench/floor", token,
                requests=args.requests // args.rounds, concurrency=args.concurrency, idem=False,
            ))  # fmt: skip
            our_runs.append(load(
                port, "/api/v1/memories", token,
                requests=args.requests // args.rounds, concurrency=args.concurrency, idem=True,
            ))  # fmt: skip
        floor, ours = summary(floor_runs), summary(our_runs)
    finally:
        web.stop()
    floor["sql"] = sql_per_request(token, "/bench/floor", idem=False)
    ours["sql"] = sql_per_request(token, "/api/v1/memories", idem=True)
    ratio = round(ours["requestsPerSecond"] / floor["requestsPerSecond"], 2)
    print(f"{'endpoint':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, row in (("floor (1-row DRF)", floor), ("POST /memories", ours)):
        print(
            f"{name:<22}{row['requestsPerSecond']:>9}{row['p50Ms']:>9}{row['p99Ms']:>9}"
            f"{row['errors']:>8}"
        )
    print(f"ours / floor = {ratio} (aim: 0.60 or more, zero errors)")
    print(f"{'SQL per request':<22}{'statements':>11}{'savepoints':>11}{'transactions':>13}")
    for name, row in (("floor (1-row DRF)", floor), ("POST /memories", ours)):
        sql = row["sql"]
        print(f"{name:<22}{sql['statements']:>11}{sql['savepoints']:>11}{sql['transactions']:>13}")
    write_results(
        "ingest",
        {"floor": floor, "memoriesCreate": ours, "ratioToFloor": ratio},
    )


if __name__ == "__main__":
    main()
