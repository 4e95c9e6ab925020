"""Data for the staff UI tests (admin changelists, the dashboard, the browser tests)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from django.utils import timezone

from accounts.models import User
from alerting.models import Alert
from common.clock import next_reset, today
from costs import metering
from costs.budget import cost_totals_rebuild
from costs.models import AICostRecord, Operation, UserUsage
from costs.prices import prices_load
from costs.tests.helpers import Tokens
from enrichment.models import EnrichmentJob, JobStatus, WorkerHeartbeat
from memories.models import EnrichmentStatus, Memory, MemoryType
from memories.tally import tally_rebuild

JOB_STATUSES = [
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.DEFERRED,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
]
_serial = itertools.count()


def seed_rows(n: int) -> None:
    """`n` users, each with a memory, a job (statuses in turn), an AI cost record, a day of
    usage and an alert, written directly (fast): for changelists and query counts."""
    now = timezone.now()
    day = today()
    batch = [next(_serial) for _ in range(n)]
    users = User.objects.bulk_create([User(email=f"seed{i}@example.com") for i in batch])
    memories = Memory.objects.bulk_create(
        [
            Memory(
                user=user,
                text_content=f"Seeded memory number {i}",
                type=MemoryType.values[i % len(MemoryType.values)],
                category="work" if i % 2 else "",
                tags=["seed"] if i % 2 else [],
                enrichment_status=EnrichmentStatus.values[i % len(EnrichmentStatus.values)],
            )
            for i, user in zip(batch, users, strict=True)
        ]
    )
    EnrichmentJob.objects.bulk_create(
        [
            EnrichmentJob(
                memory=memory,
                status=JOB_STATUSES[i % len(JOB_STATUSES)],
                text_hash="0" * 64,
                attempts=i % 3,
                finished_at=now if JOB_STATUSES[i % 5] in ("completed", "failed") else None,
                last_error="provider error: 500 Internal Server Error" if i % 5 == 4 else "",
            )
            for i, memory in zip(batch, memories, strict=True)
        ]
    )
    AICostRecord.objects.bulk_create(
        [
            AICostRecord(
                user=user,
                memory_id=memory.pk,
                operation=Operation.values[i % 2],
                provider="openai",
                model="gpt-4o-mini" if i % 2 == 0 else "text-embedding-3-small",
                input_tokens=100 + i,
                output_tokens=10,
                cost_cents=Decimal("0.0125"),
                day=day,
                created_at=now,
            )
            for i, user, memory in zip(batch, users, memories, strict=True)
        ]
    )
    # Bulk writes bypass the ORM hooks: roll up and count as a bulk import must.
    cost_totals_rebuild()
    tally_rebuild()
    UserUsage.objects.bulk_create(
        [UserUsage(user=user, day=day, memories_created=1, enrichments=1) for user in users]
    )
    Alert.objects.bulk_create(
        [
            Alert(
                kind="queue_failed",
                severity=["info", "warning", "critical"][i % 3],
                dedup_key=f"seed:{i}",
                title=f"Seeded alert {i}",
                created_at=now - dt.timedelta(minutes=i),
            )
            for i in batch
        ]
    )


def worker_alive(hostname: str = "worker-1@test") -> WorkerHeartbeat:
    now = timezone.now()
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"pid": 4242, "started_at": now - dt.timedelta(minutes=5), "last_seen": now},
    )
    return heartbeat


def spend(user, calls: int) -> None:
    """`calls` real AI calls through the metering door at the seeded prices."""
    prices_load()
    for i in range(calls):
        operation = "classification" if i % 2 == 0 else "embedding"
        model = "gpt-4o-mini" if operation == "classification" else "text-embedding-3-small"
        output = 60 if operation == "classification" else 0
        with metering.meter(
            operation=operation, provider="openai", model=model, user_id=user.pk,
            input_tokens=4000 + 37 * i, max_output_tokens=output,
        ) as call:  # fmt: skip
            call.settle(model=model, usage=Tokens(4000 + 37 * i, output))


def jobs(user, **counts: int) -> None:
    """Jobs by status for the queue numbers, e.g. jobs(user, pending=3, failed=2); deferred
    ones wait for the budget until the daily reset, as the worker defers them."""
    now = timezone.now()
    deferred = {"deferred_reason": "budget_exhausted", "not_before": next_reset(now)}
    rows = []
    for status, count in counts.items():
        for _ in range(count):
            memory = Memory.objects.create(user=user, text_content=f"{status} memory")
            rows.append(
                EnrichmentJob(
                    memory=memory,
                    status=status,
                    text_hash="0" * 64,
                    finished_at=now if status in ("completed", "failed") else None,
                    last_error="boom" if status == "failed" else "",
                    **(deferred if status == "deferred" else {}),
                )
            )
    EnrichmentJob.objects.bulk_create(rows)


def assert_queue_on_page(metric, queue: dict) -> None:
    """Every queue figure of the staff API (`queue`) is on the page, deferral reasons included;
    `metric(name)` reads the page's data-metric="name"."""
    for key, value in queue.items():
        if key != "deferredByReason":
            assert int(metric(f"queue.{key}")) == value, key  # noqa: S101
    for reason, row in queue["deferredByReason"].items():
        prefix = f"queue.deferredByReason.{reason}"
        assert int(metric(f"{prefix}.count")) == row["count"], reason  # noqa: S101
        until = dt.datetime.fromisoformat(metric(f"{prefix}.until"))
        assert until == dt.datetime.fromisoformat(row["until"]), reason  # noqa: S101
