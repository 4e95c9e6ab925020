"""Search: pgvector for embeddings (the JSON vectors are converted in place), the owner on each
embedding row, and a stored tsvector with its GIN index.

The tsvector's trigger (it follows SEARCH_LANGUAGE) and the HNSW index of the active embedding
model are kept by memories.search.search_schema_ensure after every migrate."""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
import django.db.models.deletion
import pgvector.django
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("memories", "0003_text_search_trigram_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        pgvector.django.VectorExtension(),
        migrations.AddField(
            model_name="embedding",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunSQL(
            "UPDATE memories_embedding e SET user_id = m.user_id "
            "FROM memories_memory m WHERE m.id = e.memory_id",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="embedding",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        # A JSON array's text ("[0.1, -0.2]") is pgvector's input format: converted in place.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE memories_embedding "
                    "ALTER COLUMN vector TYPE vector USING vector::text::vector",
                    "ALTER TABLE memories_embedding "
                    "ALTER COLUMN vector TYPE jsonb USING vector::text::jsonb",
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="embedding", name="vector", field=pgvector.django.VectorField()
                )
            ],
        ),
        # Going back: the HNSW indexes made after migrate go first (they cast the column).
        migrations.RunSQL(
            migrations.RunSQL.noop,
            "DO $$ DECLARE name text; BEGIN FOR name IN SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'memories_embedding' AND indexname LIKE 'embedding_hnsw_%' "
            "LOOP EXECUTE format('DROP INDEX %I', name); END LOOP; END $$",
        ),
        migrations.AddIndex(
            model_name="embedding",
            index=models.Index(fields=["user", "model", "dimensions"], name="embedding_user_model"),
        ),
        migrations.AddIndex(
            model_name="embedding",
            index=models.Index(fields=["model", "dimensions"], name="embedding_model"),
        ),
        migrations.AddField(
            model_name="memory",
            name="search_vector",
            field=django.contrib.postgres.search.SearchVectorField(editable=False, null=True),
        ),
        # Going back: the trigger made after migrate goes before its column.
        migrations.RunSQL(
            migrations.RunSQL.noop,
            "DROP TRIGGER IF EXISTS memory_search_vector ON memories_memory; "
            "DROP FUNCTION IF EXISTS memory_search_vector_update()",
        ),
        migrations.AddIndex(
            model_name="memory",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["search_vector"], name="memory_search_vector"
            ),
        ),
    ]
