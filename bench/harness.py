"""Shared pieces of the benchmarks: the bench database, environments, percentiles, results."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A database of its own (the benchmarks empty their tables) on the server DATABASE_URL names —
# `make bench` runs them on the embedded PostgreSQL — unless BENCH_DATABASE_URL says otherwise.
DB_URL = os.environ.get("BENCH_DATABASE_URL") or (
    os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/memoryconnector_bench"
    if os.environ.get("DATABASE_URL")
    else "postgres://postgres@127.0.0.1:5432/memoryconnector_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105


def ensure_database(url: str = DB_URL) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every process of a benchmark run."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "memoryconnector.settings.local",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": SECRET,
        "JWT_SIGNING_KEY": SECRET,
        "DATABASE_URL": DB_URL,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": "",
        "AI_DAILY_BUDGET_CENTS": "100000000",
        "USER_DAILY_MEMORY_LIMIT": "0",
        "USER_DAILY_ENRICHMENT_LIMIT": "0",
        "AUTH_THROTTLE_RATE": "100000/min",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # DEBUG is off, so admin pages need the hashed static files (staticfiles/ is git-ignored).
    call_command("collectstatic", interactive=False, verbosity=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def write_results(name: str, payload: dict) -> Path:
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": name,
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                **payload,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return out
