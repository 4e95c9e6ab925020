import datetime as dt

import pytest
import time_machine
from django.core.management import call_command

from memories.models import Embedding, Memory
from memories.services import embedding_save, memory_create, memory_delete
from memories.tally import tally_counts, tally_rebuild

pytestmark = pytest.mark.django_db


def counted_from_tables() -> dict[str, int]:
    start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    live = Memory.objects.filter(deleted_at__isnull=True)
    return {
        "memories": live.count(),
        "memoriesToday": live.filter(created_at__gte=start).count(),
        "embeddings": Embedding.objects.filter(memory__in=live).count(),
    }


def test_the_tally_follows_creates_deletes_and_embeddings_across_days(user, make_user):
    bob = make_user("bob@example.com")
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with time_machine.travel(yesterday, tick=False):
        old = [memory_create(user=user, text_content=f"old {i}", type="note") for i in range(3)]
        embedding_save(memory_id=old[0].pk, model="m", dimensions=1, vector=[1.0])
    new = [memory_create(user=bob, text_content=f"new {i}", type="note") for i in range(4)]
    embedding_save(memory_id=new[0].pk, model="m", dimensions=1, vector=[1.0])
    embedding_save(memory_id=new[0].pk, model="m2", dimensions=1, vector=[1.0])  # replaced
    memory_delete(memory=old[0])  # yesterday's, with an embedding
    memory_delete(memory=new[1])  # today's
    memory_delete(memory=new[1])  # twice: counted once
    expected = {"memories": 5, "memoriesToday": 3, "embeddings": 1}
    assert tally_counts() == expected == counted_from_tables()


def test_a_rebuild_recounts_what_bypassed_the_services(user, capsys):
    memory_create(user=user, text_content="kept", type="note")
    Memory.objects.create(user=user, text_content="bulk-imported")  # no tally
    assert tally_counts()["memories"] == 1
    assert tally_rebuild() == counted_from_tables() == {
        "memories": 2, "memoriesToday": 2, "embeddings": 0,
    }  # fmt: skip
    call_command("memory_tally_rebuild")
    assert "2 memories (2 today)" in capsys.readouterr().out


@pytest.mark.postgres
def test_postgres_has_a_trigram_index_for_text_search():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_text_trgm'")
        (definition,) = cursor.fetchone()
    assert "gin_trgm_ops" in definition


def test_it_adds_to_the_shards_row_and_refuses_a_name_that_is_not_a_tally_field(user):
    from memories.models import MemoryTally
    from memories.tally import tally_add

    tally_add(user_id=user.pk, created=2, deleted=0)  # the day's first: the row is created
    tally_add(user_id=user.pk, created=1, embeddings_added=3)
    row = MemoryTally.objects.get(shard=user.pk % MemoryTally.SHARDS)
    assert (row.created, row.deleted, row.embeddings_added) == (3, 0, 3)
    with pytest.raises(ValueError, match="not tally fields"):
        tally_add(user_id=user.pk, created=1, **{"created = 0 --": 1})
    assert MemoryTally.objects.get(pk=row.pk).created == 3
