"""Pipeline benchmark: N memories through real Celery workers on Redis and PostgreSQL, with the
OpenAI stub at zero latency. Prints jobs/s and p50/p95 from create to enriched, beside the
reference design's figure (one poll of 10 jobs every 5 s = 2 jobs/s).

    .venv/bin/python bench/pipeline.py [--memories 2000] [--workers 1,2,4] [--concurrency 2]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/memoryconnector_bench,
created if missing) and Redis (REDIS_URL, default redis://127.0.0.1:6379/14). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/memoryconnector_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
REFERENCE_JOBS_PER_SECOND = 10 / 5


def ensure_database() -> None:
    import psycopg

    name = DB_URL.rsplit("/", 1)[1]
    admin = DB_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_once(*, memories: int, workers: int, concurrency: int, env: dict, rate: float) -> dict:
    import django
    from django.db import connection

    from accounts.models import User
    from costs.models import AICostRecord
    from enrichment.models import EnrichmentJob
    from memories.models import Memory
    from memories.services import memory_create

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE ai_cost_tracking, enrichment_enrichmentjob, memories_embedding, "
            "memories_memory, user_usage, costs_dailybudget CASCADE"
        )
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    user, _ = User.objects.get_or_create(email="bench@example.com")

    procs = [
        subprocess.Popen(  # noqa: S603 - our own worker command
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "memoryconnector",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                f"--hostname=bench{i}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(workers)
    ]
    try:
        from enrichment.models import WorkerHeartbeat

        deadline = time.monotonic() + 60
        while WorkerHeartbeat.objects.count() < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        started = time.monotonic()
        for i in range(memories):
            if rate:
                # A steady arrival rate: latency without a backlog.
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
            memory_create(
                user=user, text_content=f"Benchmark memory {i}: meeting at 9", type="note"
            )
        created_in = time.monotonic() - started
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = Memory.objects.filter(enrichment_status="enriched").count()
            if done >= memories:
                break
            time.sleep(0.2)
        rows = list(Memory.objects.values_list("created_at", "enriched_at"))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    finished = [(c, e) for c, e in rows if e is not None]
    latencies = [(e - c).total_seconds() for c, e in finished]
    first = min(c for c, _ in rows)
    last = max(e for _, e in finished) if finished else first
    elapsed = (last - first).total_seconds() or 1e-9
    jobs_done = EnrichmentJob.objects.filter(status="completed").count()
    return {
        "workers": workers,
        "concurrency": concurrency,
        "memories": memories,
        "arrivalRate": rate or "burst",
        "enriched": len(finished),
        "jobsCompleted": jobs_done,
        "costRecords": AICostRecord.objects.count(),
        "createSeconds": round(created_in, 2),
        "elapsedSeconds": round(elapsed, 2),
        "jobsPerSecond": round(len(finished) / elapsed, 1),
        "p50Seconds": round(statistics.median(latencies), 3) if latencies else None,
        "p95Seconds": round(percentile(latencies, 0.95), 3) if latencies else None,
        "vsReference": round(len(finished) / elapsed / REFERENCE_JOBS_PER_SECOND, 1),
        "django": django.get_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--workers", default="1", help="comma-separated worker process counts")
    parser.add_argument("--concurrency", type=int, default=2, help="processes per worker")
    parser.add_argument(
        "--rate", type=float, default=0, help="memories per second (0 = all at once)"
    )
    parser.add_argument("--output", default="pipeline", help="name of the results file")
    args = parser.parse_args()

    from enrichment.testing.openai_stub import OpenAIStub

    stub = OpenAIStub().start()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "memoryconnector.settings.local",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": DB_URL,
        "REDIS_URL": REDIS_URL,
        "AI_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "OPENAI_BASE_URL": stub.base_url,
        "AI_DAILY_BUDGET_CENTS": "100000000",
        "USER_DAILY_MEMORY_LIMIT": "0",
        "USER_DAILY_ENRICHMENT_LIMIT": "0",
        "LOG_LEVEL": "WARNING",
        "ENRICHMENT_HEARTBEAT_SECONDS": "1",
    }
    os.environ.update(env)
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        result = run_once(
            memories=args.memories,
            workers=workers,
            concurrency=args.concurrency,
            env=env,
            rate=args.rate,
        )
        results.append(result)
        print(
            f"workers={workers}x{args.concurrency}  arrivals={result['arrivalRate']}"
            f"  {result['enriched']}/{args.memories} enriched"
            f"  {result['jobsPerSecond']} jobs/s ({result['vsReference']}x the reference's "
            f"{REFERENCE_JOBS_PER_SECOND} jobs/s)  p50 {result['p50Seconds']} s"
            f"  p95 {result['p95Seconds']} s  provider calls {len(stub.calls)}",
            flush=True,
        )
        stub.state.calls.clear()
    stub.stop()
    out = ROOT / "bench" / "results" / f"{args.output}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "pipeline",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "referenceJobsPerSecond": REFERENCE_JOBS_PER_SECOND,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
