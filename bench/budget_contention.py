"""Budget under contention: 8 worker processes race for a small daily budget through the real
pipeline (Celery on Redis, PostgreSQL, the OpenAI stub at zero latency). Reports the overspend
(must stay within the estimate error of calls in flight: with estimates above real costs, 0),
the reservations left (must be 0), and the share of the budget spent when the breaker opened
(exhaustion: the rest could not cover one more call; aim: at least 95 %).

    .venv/bin/python bench/budget_contention.py [--memories 800] [--budget-cents 0.5]

Not a test.
"""

from __future__ import annotations

import argparse
import time

from harness import bench_env, django_setup, write_results

from enrichment.testing import processes
from enrichment.testing.openai_stub import OpenAIStub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=800)
    parser.add_argument("--budget-cents", default="0.5")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (hosts)")
    parser.add_argument("--concurrency", type=int, default=4, help="processes per worker")
    args = parser.parse_args()

    stub = OpenAIStub().start()
    env = bench_env(
        AI_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench-not-a-real-key",
        OPENAI_BASE_URL=stub.base_url,
        AI_DAILY_BUDGET_CENTS=args.budget_cents,
        ENRICHMENT_BATCH_SIZE="1000",
    )
    django_setup(env)
    import redis
    from django.db import connection
    from django.db.models import Count, Sum

    from accounts.models import User
    from costs.models import AICostRecord, BudgetReservation, DailyBudget
    from enrichment.models import EnrichmentJob
    from memories.services import memory_create

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE ai_cost_tracking, costs_budgetreservation, costs_dailybudget, "
            "enrichment_enrichmentjob, memories_embedding, memories_memory, user_usage CASCADE"
        )
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    user, _ = User.objects.get_or_create(email="contention@example.com")

    workers = [
        processes.celery_worker(env, name=f"race{i}", concurrency=args.concurrency)
        for i in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    try:
        for i in range(args.memories):
            memory_create(
                user=user, text_content=f"Contention memory {i}: pay the rent", type="note"
            )

        def settled() -> bool:
            return not EnrichmentJob.objects.filter(status__in=["pending", "processing"]).exists()

        processes.wait_until(settled, timeout=600, what="every job completed or deferred")
    finally:
        for worker in workers:
            worker.stop()
        stub.stop()
    elapsed = time.monotonic() - started

    from costs.selectors import budget_snapshot, percent_of

    snapshot = budget_snapshot()
    budget = DailyBudget.objects.get()
    ledger = AICostRecord.objects.aggregate(total=Sum("cost_cents"))["total"]
    jobs = dict(EnrichmentJob.objects.values_list("status").annotate(n=Count("pk")))
    active = BudgetReservation.objects.filter(state="active").count()
    overspend = max(budget.spent_cents - snapshot.limit_cents, 0)
    result = {
        "workerProcesses": args.workers * args.concurrency,
        "memories": args.memories,
        "limitCents": snapshot.limit_cents,
        "spentCents": budget.spent_cents,
        "ledgerCents": ledger,
        "ledgerMatchesBudget": ledger == budget.spent_cents,
        "overspendCents": overspend,
        "reservedCentsLeft": budget.reserved_cents,
        "activeReservationsLeft": active,
        "operations": budget.operation_count,
        "breaker": snapshot.state,
        "openReason": snapshot.open_reason,
        # What share of the budget was spent when the breaker opened (nothing is spent after).
        "percentUsedWhenOpened": percent_of(budget.spent_cents, snapshot.limit_cents),
        "jobs": jobs,
        "seconds": round(elapsed, 1),
    }
    for key, value in result.items():
        print(f"{key:<24}{value}")
    write_results("budget_contention", result)


if __name__ == "__main__":
    main()
