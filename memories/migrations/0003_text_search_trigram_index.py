"""On PostgreSQL, a trigram index so the admin's text search (ILIKE '%…%') does not scan every
memory. pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it. Where
it cannot be created, the search still works, only slower — the migration does not fail."""

import logging

from django.db import migrations

logger = logging.getLogger(__name__)


def create_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT trigram_index")
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute(
                "CREATE INDEX IF NOT EXISTS memory_text_trgm ON memories_memory "
                "USING gin (text_content gin_trgm_ops)"
            )
            cursor.execute("RELEASE SAVEPOINT trigram_index")
        except Exception as exc:  # noqa: BLE001 - optional speed-up, never a failed deploy
            cursor.execute("ROLLBACK TO SAVEPOINT trigram_index")
            logger.warning("memory text search index not created: %s", exc)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS memory_text_trgm")


class Migration(migrations.Migration):
    dependencies = [("memories", "0002_memory_tally")]

    operations = [migrations.RunPython(create_index, drop_index)]
