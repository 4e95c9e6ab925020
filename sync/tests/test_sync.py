"""The sync endpoints against real PostgreSQL: change tracking is a commit-time trigger, so
these tests commit (transactional database)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.testing import assert_error, run_in_threads
from conftest import client_for
from enrichment.models import EnrichmentJob
from memories.models import Memory
from memories.services import memory_create, memory_delete, memory_update
from sync.records import SCHEMA_VERSION
from sync.services import sync_tombstones_purge

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/sync"


def pull(client, last_pulled_at=None, **params) -> dict:
    query = {"last_pulled_at": "null" if last_pulled_at is None else last_pulled_at}
    response = client.get(URL, {**query, "schema_version": SCHEMA_VERSION, **params})
    assert response.status_code == 200, response.content
    return response.json()


def push(client, last_pulled_at, *, created=(), updated=(), deleted=()):
    changes = {"memories": {"created": list(created), "updated": list(updated),
                            "deleted": list(deleted)}}  # fmt: skip
    return client.post(f"{URL}?last_pulled_at={last_pulled_at}", changes, "json")


def raw(text="Offline thought", *, record_id=None, **columns) -> dict:
    """A raw record as WatermelonDB pushes it (with its bookkeeping fields)."""
    return {"id": record_id or str(uuid.uuid4()), "text_content": text, "type": "note",
            "_status": "created", "_changed": "", **columns}  # fmt: skip


def ids(changes: dict, kind: str) -> set[str]:
    table = changes["changes"]["memories"]
    return set(table[kind]) if kind == "deleted" else {r["id"] for r in table[kind]}


def test_it_pulls_every_live_memory_on_a_first_sync(api, user):
    kept = memory_create(user=user, text_content="Keep me", type="idea")
    gone = memory_create(user=user, text_content="Drop me", type="note")
    memory_delete(memory=gone)
    body = pull(api)
    assert body["timestamp"] > 0
    assert body["changes"]["memories"]["created"] == []
    assert body["changes"]["memories"]["deleted"] == []
    [record] = body["changes"]["memories"]["updated"]
    assert record["id"] == str(kept.pk)
    assert record["text_content"] == "Keep me" and record["type"] == "idea"
    assert record["tags"] == "[]" and record["enriched_at"] is None
    assert record["created_at"] == int(kept.created_at.timestamp() * 1000)


def test_it_pulls_only_what_changed_since_the_cursor(api, user):
    quiet = memory_create(user=user, text_content="Untouched", type="note")
    enriched = memory_create(user=user, text_content="Will be enriched", type="note")
    deleted = memory_create(user=user, text_content="Will be deleted", type="note")
    cursor = pull(api)["timestamp"]
    assert pull(api, cursor)["changes"]["memories"]["updated"] == []

    # Enrichment writes with a queryset update (no updated_at bump): still a change.
    Memory.objects.filter(pk=enriched.pk).update(
        category="food", tags=["milk"], enrichment_status="enriched", enriched_at=timezone.now()
    )
    memory_delete(memory=deleted)
    body = pull(api, cursor)
    assert ids(body, "updated") == {str(enriched.pk)}
    assert ids(body, "deleted") == {str(deleted.pk)}
    [record] = body["changes"]["memories"]["updated"]
    assert record["category"] == "food" and json.loads(record["tags"]) == ["milk"]
    assert body["timestamp"] > cursor
    assert str(quiet.pk) not in ids(body, "updated")
    # Nothing new: the same cursor comes back and nothing is sent again.
    again = pull(api, body["timestamp"])
    assert again["timestamp"] == body["timestamp"]
    assert ids(again, "updated") == set() and ids(again, "deleted") == set()


def test_it_reports_a_hard_deleted_memory_as_deleted(api, user):
    memory = memory_create(user=user, text_content="Removed by staff", type="note")
    cursor = pull(api)["timestamp"]
    Memory.objects.filter(pk=memory.pk).delete()
    assert ids(pull(api, cursor), "deleted") == {str(memory.pk)}


def test_it_never_misses_a_change_that_commits_after_a_pull(api, user):
    """The out-of-order commit: a writer starts first and commits last, after a pull that saw
    a later writer's change. Its change must reach the device on the next pull."""
    early = memory_create(user=user, text_content="early v1", type="note")
    cursor = pull(api)["timestamp"]
    written, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                memory_update(memory=Memory.objects.get(pk=early.pk), text_content="early v2")
                written.set()
                assert release.wait(timeout=30)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert written.wait(timeout=30)
    # A second writer starts after the first and commits before it.
    late = memory_create(user=user, text_content="late", type="note")
    middle = pull(api, cursor)  # the slow writer is still open across this pull
    assert ids(middle, "updated") == {str(late.pk)}
    release.set()
    assert done.wait(timeout=30)
    thread.join(timeout=30)
    after = pull(api, middle["timestamp"])
    assert ids(after, "updated") == {str(early.pk)}
    assert after["changes"]["memories"]["updated"][0]["text_content"] == "early v2"


def test_it_never_shows_other_users_records(api, user, make_user):
    other = make_user("bob@example.com")
    theirs = memory_create(user=other, text_content="Bob's secret", type="note")
    mine = memory_create(user=user, text_content="Mine", type="note")
    first = pull(api)
    assert ids(first, "updated") == {str(mine.pk)}
    memory_delete(memory=theirs)
    memory_create(user=other, text_content="Bob again", type="note")
    later = pull(api, first["timestamp"])
    assert ids(later, "updated") == set() and ids(later, "deleted") == set()
    # Their ids are not ours to change or delete.
    response = push(api, later["timestamp"], updated=[raw("hijack", record_id=str(theirs.pk))])
    error = assert_error(response, 400, "validation_error")
    assert str(theirs.pk) in error["message"]
    other_live = memory_create(user=other, text_content="Bob stays", type="note")
    assert push(api, later["timestamp"], deleted=[str(other_live.pk)]).status_code == 200
    assert Memory.objects.alive().filter(pk=other_live.pk).exists()


def test_it_applies_a_push_and_queues_enrichment_like_the_api(api, user):
    cursor = pull(api)["timestamp"]
    new = raw("Captured on the train", type="idea", category="hacked", tags='["x"]',
              enrichment_status="enriched", enriched_at=1, created_at=1, updated_at=1)  # fmt: skip
    response = push(api, cursor, created=[new])
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0}
    memory = Memory.objects.get(pk=new["id"])
    assert memory.user == user and memory.text_content == "Captured on the train"
    assert memory.type == "idea"
    # Server-owned columns in a push are ignored.
    assert memory.category == "" and memory.tags == [] and memory.enrichment_status == "pending"
    assert memory.enriched_at is None and memory.created_at.year >= 2025
    assert EnrichmentJob.objects.filter(memory=memory, status="pending").count() == 1

    # The device's own change comes back on its next pull, with the server's columns.
    body = pull(api, cursor)
    [record] = body["changes"]["memories"]["updated"]
    assert record["id"] == new["id"] and record["enrichment_status"] == "pending"

    edit = {**new, "text_content": "Captured on the night train", "_status": "updated"}
    assert push(api, body["timestamp"], updated=[edit]).status_code == 200
    memory.refresh_from_db()
    assert memory.text_content == "Captured on the night train"
    assert EnrichmentJob.objects.filter(memory=memory).count() == 2


def test_a_push_sends_its_enrichment_tasks_together_after_the_commit(api, user, monkeypatch):
    from common import publish
    from enrichment.services import PROCESS_TASK

    sends = []  # per broker round trip: the tasks and their arguments

    def recording_publish(messages, *, app=None):
        messages = list(messages)
        assert not connection.in_atomic_block  # after the push's commit
        sends.append([(m.name, list(m.args)) for m in messages])
        return len(messages)

    monkeypatch.setattr(publish, "tasks_publish", recording_publish)
    cursor = pull(api)["timestamp"]
    response = push(api, cursor, created=[raw(f"Offline note {n}") for n in range(12)])
    assert response.status_code == 200, response.content
    jobs = sorted(EnrichmentJob.objects.filter(memory__user=user).values_list("pk", flat=True))
    assert len(jobs) == 12
    [sent] = sends  # one send for the whole push, not one per memory
    assert sorted(args[0] for name, args in sent if name == PROCESS_TASK) == jobs

    refused = push(api, cursor, created=[raw("fine"), raw("")])  # nothing applied, nothing sent
    assert refused.status_code == 400
    assert len(sends) == 1


def test_it_follows_watermelondbs_rules_for_missing_and_existing_records(api, user):
    existing = memory_create(user=user, text_content="Server copy", type="note")
    cursor = pull(api)["timestamp"]
    orphan_update = raw("Updated but unknown here", _status="updated")
    response = push(
        api,
        cursor,
        created=[raw("Created again", record_id=str(existing.pk))],
        updated=[orphan_update],
        deleted=[str(uuid.uuid4())],
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 1, "updated": 1, "deleted": 0, "unchanged": 1}
    existing.refresh_from_db()
    assert existing.text_content == "Created again"
    assert Memory.objects.get(pk=orphan_update["id"]).text_content == "Updated but unknown here"


def test_it_creates_nothing_twice_when_a_push_is_retried(api, user):
    cursor = pull(api)["timestamp"]
    records = [raw(f"Thought {n}") for n in range(3)]
    first = push(api, cursor, created=records)
    assert first.status_code == 200
    # The answer was lost; the device pushes the same changes with the same cursor.
    second = push(api, cursor, created=records)
    assert second.status_code == 200, second.content
    assert second.json() == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 3}
    assert Memory.objects.filter(user=user).count() == 3
    assert EnrichmentJob.objects.filter(memory__user=user).count() == 3
    from costs.models import UserUsage

    assert UserUsage.objects.get(user=user).memories_created == 3


def test_it_refuses_a_push_over_a_server_change_and_names_the_ids(api, user):
    a = memory_create(user=user, text_content="A", type="note")
    b = memory_create(user=user, text_content="B", type="note")
    cursor = pull(api)["timestamp"]
    memory_update(memory=a, text_content="A edited on the web")
    memory_update(memory=b, text_content="B edited on the web")
    response = push(
        api,
        cursor,
        created=[raw("Brand new")],
        updated=[raw("A from the phone", record_id=str(a.pk))],
        deleted=[str(b.pk)],
    )
    error = assert_error(response, 409, "conflict")
    assert sorted(error["details"]["conflicts"]["memories"]) == sorted([str(a.pk), str(b.pk)])
    # Nothing was applied: not the create, not the edit, not the delete.
    assert Memory.objects.filter(user=user).count() == 2
    a.refresh_from_db()
    assert a.text_content == "A edited on the web"
    assert Memory.objects.alive().filter(pk=b.pk).exists()
    # Pull again, push again: accepted.
    fresh = pull(api, cursor)["timestamp"]
    retry = push(api, fresh, updated=[raw("A from the phone", record_id=str(a.pk))])
    assert retry.status_code == 200


def test_it_applies_nothing_when_one_record_of_a_hundred_is_bad(api, user):
    cursor = pull(api)["timestamp"]
    records = [raw(f"Note {n}") for n in range(100)]
    records[57]["text_content"] = "x" * 8001
    response = push(api, cursor, created=records)
    error = assert_error(response, 400, "validation_error")
    assert records[57]["id"] in error["message"]
    assert f"memories.{records[57]['id']}.text_content" in error["details"]
    assert Memory.objects.filter(user=user).count() == 0
    assert EnrichmentJob.objects.count() == 0


def test_it_applies_nothing_past_the_daily_memory_limit(api, user, settings):
    settings.USER_DAILY_MEMORY_LIMIT = 2
    cursor = pull(api)["timestamp"]
    response = push(api, cursor, created=[raw(f"Note {n}") for n in range(3)])
    error = assert_error(response, 429, "limit_exceeded")
    assert int(response["Retry-After"]) > 0 and error["details"]["kind"] == "memories"
    assert Memory.objects.filter(user=user).count() == 0


@pytest.mark.parametrize(
    ("record_id", "words"),
    [("not-a-uuid", "UUID"), ("0123456789abcdef", "UUID"), (str(uuid.uuid4()).upper(), "UUID"),
     (42, "UUID")],
)  # fmt: skip
def test_it_refuses_ids_that_are_not_uuids_naming_the_record(api, record_id, words):
    cursor = pull(api)["timestamp"]
    error = assert_error(push(api, cursor, created=[raw(record_id=record_id)]), 400)
    assert words in error["message"] and str(record_id) in error["message"]
    assert Memory.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([], "changes"),
        ({}, "memories"),
        ({"projects": {"created": [], "updated": [], "deleted": []}}, "projects"),
        ({"memories": {"created": {}, "updated": [], "deleted": []}}, "memories.created"),
        ({"memories": {"created": ["x"], "updated": [], "deleted": []}}, "memories.created[0]"),
        ({"memories": {"created": [], "updated": [], "deleted": [], "moved": []}}, "memories"),
    ],
)
def test_it_refuses_malformed_changes_with_a_400(api, body, where):
    response = api.post(f"{URL}?last_pulled_at=1", body, "json")
    error = assert_error(response, 400, "validation_error")
    assert where in error["details"]


@pytest.mark.parametrize(
    ("columns", "field"),
    [({"text_content": 5}, "text_content"), ({"text_content": "   "}, "text_content"),
     ({"type": "poem"}, "type"), ({"text_content": None}, "text_content")],
)  # fmt: skip
def test_it_refuses_wrong_column_values_naming_the_field(api, columns, field):
    record = raw(**columns)
    error = assert_error(push(api, 1, created=[record]), 400, "validation_error")
    assert f"memories.{record['id']}.{field}" in error["details"]


def test_it_refuses_oversized_pushes(api, settings):
    settings.SYNC_PUSH_MAX_RECORDS = 3
    error = assert_error(push(api, 1, created=[raw() for _ in range(4)]), 400)
    assert error["details"] == {"maxRecords": 3, "records": 4}
    settings.SYNC_PUSH_MAX_BYTES = 2000
    error = assert_error(push(api, 1, created=[raw("y" * 2500)]), 413, "payload_too_large")
    assert error["details"] == {"maxBytes": 2000}
    # A push may be bigger than other requests' MAX_REQUEST_BODY_BYTES.
    settings.SYNC_PUSH_MAX_RECORDS, settings.SYNC_PUSH_MAX_BYTES = 100, 1_000_000
    settings.MAX_REQUEST_BODY_BYTES = 1000
    assert push(api, 1, created=[raw("z" * 3000)]).status_code == 200


def test_it_accepts_a_push_sent_as_text_plain(api, user):
    # WatermelonDB's documented pushChanges() posts JSON.stringify(changes) with no type.
    record = raw("From fetch without a Content-Type")
    body = json.dumps({"memories": {"created": [record], "updated": [], "deleted": []}})
    response = api.generic("POST", f"{URL}?last_pulled_at=1", body, "text/plain;charset=UTF-8")
    assert response.status_code == 200, response.content
    assert Memory.objects.filter(pk=record["id"], user=user).exists()


@pytest.mark.parametrize(
    "query",
    ["last_pulled_at=abc", "last_pulled_at=", "migration=", "last_pulled_at=1.5",
     "last_pulled_at=-1", "schema_version=x", "last_pulled_at=99999999999999999999",
     "migration=%7Bnot-json", "migration=%5B%5D", 'migration={"from":"1"}'],
)  # fmt: skip
def test_it_refuses_bad_pull_parameters(api, query):
    assert_error(api.get(f"{URL}?{query}"), 400, "validation_error")


def test_it_refuses_a_push_without_a_body(api):
    error = assert_error(api.post(f"{URL}?last_pulled_at=1"), 400, "validation_error")
    assert "memories" in error["details"]


def test_it_refuses_a_push_without_a_cursor(api):
    error = assert_error(api.post(URL, {"memories": {}}, "json"), 400, "validation_error")
    assert "last_pulled_at" in error["details"]
    huge = f"{URL}?last_pulled_at=99999999999999999999"
    assert_error(api.post(huge, {"memories": {}}, "json"), 400, "validation_error")


def test_it_needs_a_token(anon):
    assert_error(anon.get(URL), 401, "not_authenticated")


def test_it_pulls_everything_again_for_a_migration_that_adds_the_table(api, user):
    memory = memory_create(user=user, text_content="Old", type="note")
    cursor = pull(api)["timestamp"]
    migration = json.dumps({"from": 0, "tables": ["memories"], "columns": []})
    body = pull(api, cursor, migration=migration)
    assert ids(body, "updated") == {str(memory.pk)}
    unrelated = json.dumps({"from": 0, "tables": ["projects"], "columns": []})
    assert ids(pull(api, cursor, migration=unrelated), "updated") == set()


def test_it_tells_a_device_behind_the_tombstone_horizon_to_resync(api, user, settings):
    settings.SYNC_TOMBSTONE_DAYS = 90
    memory = memory_create(user=user, text_content="Short-lived", type="note")
    stale_cursor = pull(api)["timestamp"]
    memory_delete(memory=memory)
    current = pull(api, stale_cursor)
    assert ids(current, "deleted") == {str(memory.pk)}
    # Within the horizon nothing is purged.
    assert sync_tombstones_purge(now=timezone.now() + dt.timedelta(days=89)) == 0
    assert sync_tombstones_purge(now=timezone.now() + dt.timedelta(days=91)) == 1
    assert not Memory.objects.filter(pk=memory.pk).exists()
    error = assert_error(api.get(URL, {"last_pulled_at": stale_cursor}), 410, "resync_required")
    assert error["details"]["lastPulledAt"] == stale_cursor
    assert_error(push(api, stale_cursor, created=[raw()]), 410, "resync_required")
    # A device that had seen the deletion, and a fresh start, both carry on.
    assert ids(pull(api, current["timestamp"]), "deleted") == set()
    assert pull(api)["changes"]["memories"]["updated"] == []


def test_it_re_announces_a_deletion_the_device_edited_after_missing_it(api, user):
    memory = memory_create(user=user, text_content="Deleted on the web", type="note")
    memory_delete(memory=memory)
    cursor = pull(api)["timestamp"]  # a device that did not have it pulls past the deletion
    response = push(api, cursor, updated=[raw("Edited", record_id=str(memory.pk))])
    assert response.status_code == 200
    assert Memory.objects.get(pk=memory.pk).deleted_at is not None
    assert ids(pull(api, cursor), "deleted") == {str(memory.pk)}


def test_it_pulls_in_constant_queries_whatever_the_table_size(api, user):
    for n in range(30):
        memory_create(user=user, text_content=f"Old {n}", type="note")
    cursor = pull(api)["timestamp"]
    memory_create(user=user, text_content="New", type="note")

    def count_queries(last) -> int:
        with CaptureQueriesContext(connection) as queries:
            pull(api, last)
        return len(queries)

    few = count_queries(cursor)
    for n in range(30):
        memory_create(user=user, text_content=f"More {n}", type="note")
    assert count_queries(cursor) == few  # 31 changes, the same queries as for one
    # The plan for the changes starts from the (user, seq) index, not a scan of memories.
    with connection.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute(
            "EXPLAIN SELECT memory_id FROM sync_memory_change WHERE user_id = %s AND seq >= %s",
            [user.pk, cursor],
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "sync_change_user_seq" in plan


def test_it_publishes_the_client_schema(api):
    response = api.get(f"{URL}/schema")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == SCHEMA_VERSION
    [table] = body["tables"]
    assert table["name"] == "memories"
    columns = {column["name"]: column for column in table["columns"]}
    assert set(columns) == {"text_content", "type", "category", "tags", "enrichment_status",
                            "created_at", "updated_at", "enriched_at"}  # fmt: skip
    assert columns["enriched_at"] == {"name": "enriched_at", "type": "number",
                                      "isOptional": True, "isIndexed": False}  # fmt: skip


def test_it_serves_each_user_their_own_cursor(user, make_user):
    other = make_user("carol@example.com")
    memory_create(user=other, text_content="Carol's", type="note")
    assert pull(client_for(user))["timestamp"] == 1
    assert pull(client_for(other))["timestamp"] == 2


def test_it_creates_one_memory_when_the_same_push_races_itself(api, user):
    cursor = pull(api)["timestamp"]
    records = [raw(f"Raced {n}") for n in range(5)]
    statuses = run_in_threads(4, lambda _: push(client_for(user), cursor, created=records))
    codes = sorted(response.status_code for response in statuses)
    assert codes[0] == 200 and set(codes) <= {200, 409}, codes
    for response in statuses:
        if response.status_code == 409:
            assert response["Retry-After"] == "1"
    assert Memory.objects.filter(user=user).count() == 5
    assert EnrichmentJob.objects.filter(memory__user=user).count() == 5
