"""Migration 0004 moves the JSON vectors of earlier releases into pgvector."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from memories.models import Embedding

BEFORE = [("memories", "0003_text_search_trigram_index")]
AFTER = [("memories", "0004_search")]


@pytest.mark.django_db(transaction=True)
def test_it_converts_json_vectors_to_pgvector_and_fills_the_owner(make_user):
    user = make_user("old@example.com")
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO memories_memory (id, user_id, text_content, type, category, tags, "
            "enrichment_status, created_at, updated_at) VALUES (gen_random_uuid(), %s, "
            "'Old memory', 'note', '', '[]', 'enriched', now(), now()) RETURNING id",
            [user.pk],
        )
        memory_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO memories_embedding (memory_id, model, dimensions, vector, created_at) "
            "VALUES (%s, 'local-hash-v1', 3, %s, now())",
            [memory_id, json.dumps([0.6, -0.8, 0.0])],
        )
    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    call_command("migrate", verbosity=0)  # the rest, and the trigger and indexes made after it
    embedding = Embedding.objects.get(memory_id=memory_id)
    assert embedding.vector == pytest.approx([0.6, -0.8, 0.0])
    assert embedding.user_id == user.pk
