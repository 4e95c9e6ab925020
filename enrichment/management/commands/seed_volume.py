"""Fill the database with a large synthetic history, fast (PostgreSQL COPY), for the staff
pages benchmark: users, memories with embeddings and enrichment jobs, and AI cost records
spread over the last days. Refuses to run with production settings."""

from __future__ import annotations

import datetime as dt
import random
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from accounts.models import User
from costs.budget import cost_totals_rebuild
from memories.tally import tally_rebuild

OPERATIONS = [
    ("classification", "openai", "gpt-4o-mini"),
    ("embedding", "openai", "text-embedding-3-small"),
]


class Command(BaseCommand):
    help = "Seed N memories and M cost records (PostgreSQL COPY) for volume benchmarks."

    def add_arguments(self, parser):
        parser.add_argument("--memories", type=int, default=10_000)
        parser.add_argument("--cost-records", type=int, default=20_000)
        parser.add_argument("--users", type=int, default=100)
        parser.add_argument("--days", type=int, default=90, help="spread over this many days")
        parser.add_argument("--truncate", action="store_true", help="empty the tables first")

    def handle(self, *args, **options):
        if not settings.DEBUG and "bench" not in connection.settings_dict["NAME"]:
            raise CommandError(
                "seed_volume writes synthetic data: use DEBUG or a database named *bench*"
            )
        if connection.vendor != "postgresql":
            raise CommandError("seed_volume needs PostgreSQL (it uses COPY)")
        rng = random.Random(42)  # noqa: S311 - synthetic data, not secrets
        now = timezone.now()
        days = options["days"]
        if options["truncate"]:
            with connection.cursor() as cursor:
                cursor.execute(
                    "TRUNCATE ai_cost_tracking, enrichment_enrichmentjob, memories_embedding, "
                    "memories_memory, memories_idempotencykey, user_usage CASCADE"
                )
        users = list(
            User.objects.bulk_create(
                [
                    User(email=f"volume-{uuid.uuid4().hex[:12]}@example.com")
                    for _ in range(options["users"])
                ],
            )
        )
        user_ids = [u.pk for u in users]
        memory_ids: list[uuid.UUID] = []
        owners: list[int] = []

        def when() -> dt.datetime:
            return now - dt.timedelta(seconds=rng.uniform(0, days * 86400))

        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's cursor, for COPY
            with raw.copy(
                "COPY memories_memory (id, user_id, text_content, type, category, tags, "
                "enrichment_status, enriched_at, created_at, updated_at) FROM STDIN"
            ) as copy:
                for i in range(options["memories"]):
                    memory_id = uuid.uuid4()
                    owner = rng.choice(user_ids)
                    memory_ids.append(memory_id)
                    owners.append(owner)
                    created = when()
                    copy.write_row(
                        (memory_id, owner, f"Volume memory {i}", "note", "work",
                         '["volume"]', "enriched", created, created, created)
                    )  # fmt: skip
            with raw.copy(
                "COPY memories_embedding (memory_id, user_id, model, dimensions, vector, "
                "created_at) FROM STDIN"
            ) as copy:
                for memory_id, owner in zip(memory_ids, owners, strict=True):
                    copy.write_row(
                        (memory_id, owner, "local-hash-v1", 4, "[0.5, 0.5, 0.5, 0.5]", now)
                    )
            with raw.copy(
                "COPY ai_cost_tracking (user_id, memory_id, operation, provider, model, "
                "input_tokens, cached_tokens, output_tokens, cost_microcents, price_fallback, "
                "reconciled, day, created_at) FROM STDIN"
            ) as copy:
                for _ in range(options["cost_records"]):
                    operation, provider, model = rng.choice(OPERATIONS)
                    created = when()
                    tokens = rng.randint(20, 400)
                    copy.write_row(
                        (rng.choice(user_ids), rng.choice(memory_ids) if memory_ids else None,
                         operation, provider, model, tokens, 0, 10, rng.randint(1, 20000),
                         False, True, created.date(), created)
                    )  # fmt: skip
            cursor.execute("ANALYZE memories_memory, memories_embedding, ai_cost_tracking")
        # COPY bypassed the ORM: roll up and count as the ORM path would have.
        cost_totals_rebuild()
        tally_rebuild()
        self.stdout.write(
            f"Seeded {len(user_ids)} users, {len(memory_ids)} memories with embeddings, "
            f"{options['cost_records']} cost records over {days} days."
        )
