"""Ingest benchmark: POST /api/v1/memories (JWT + Idempotency-Key) under gunicorn (2 workers) on
PostgreSQL, beside a minimal DRF endpoint that inserts one row, in the same run.

    .venv/bin/python bench/ingest.py [--requests 3000] [--concurrency 16]

A bounded load generator on loopback: a fixed number of requests from a fixed number of
keep-alive connections (threads); it stops by itself. Not a test.
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
    return {
        "path": path,
        "requests": requests,
        "concurrency": concurrency,
        "requestsPerSecond": round(requests / wall, 1),
        "p50Ms": round(statistics.median(latencies) * 1000, 1),
        "p99Ms": round(percentile(latencies, 0.99) * 1000, 1),
        "errors": len(errors),
        "errorCodes": sorted(set(errors)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
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
        floor = load(
            port, "/bench/floor", token,
            requests=args.requests, concurrency=args.concurrency, idem=False,
        )  # fmt: skip
        ours = load(
            port, "/api/v1/memories", token,
            requests=args.requests, concurrency=args.concurrency, idem=True,
        )  # fmt: skip
    finally:
        web.stop()
    ratio = round(ours["requestsPerSecond"] / floor["requestsPerSecond"], 2)
    print(f"{'endpoint':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, row in (("floor (1-row DRF)", floor), ("POST /memories", ours)):
        print(
            f"{name:<22}{row['requestsPerSecond']:>9}{row['p50Ms']:>9}{row['p99Ms']:>9}"
            f"{row['errors']:>8}"
        )
    print(f"ours / floor = {ratio} (aim: 0.60 or more, zero errors)")
    write_results("ingest", {"floor": floor, "memoriesCreate": ours, "ratioToFloor": ratio})


if __name__ == "__main__":
    main()
