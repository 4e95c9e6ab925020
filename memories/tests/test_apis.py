import datetime as dt
import uuid

import pytest
from django.test import override_settings

from common.testing import assert_error
from conftest import client_for
from memories.models import Memory

pytestmark = pytest.mark.django_db

URL = "/api/v1/memories"


def detail(memory_id) -> str:
    return f"{URL}/{memory_id}"


def create(client, text="Bought oat milk", type_="note", **headers):
    return client.post(URL, {"textContent": text, "type": type_}, "json", **headers)


def create_at(client, when: dt.datetime, text: str, type_: str = "note") -> None:
    memory_id = create(client, text, type_).json()["id"]
    Memory.objects.filter(pk=memory_id).update(created_at=when)


def test_it_creates_a_pending_memory(api, user):
    response = create(api, "Call the dentist on Monday", "task")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id", "textContent", "type", "category", "tags", "enrichmentStatus",
        "createdAt", "updatedAt", "enrichedAt",
    }  # fmt: skip
    assert body["textContent"] == "Call the dentist on Monday"
    assert body["type"] == "task"
    assert body["enrichmentStatus"] == "pending"
    assert body["tags"] == [] and body["category"] == "" and body["enrichedAt"] is None
    memory = Memory.objects.get(pk=body["id"])
    assert memory.user == user


def test_it_defaults_the_type_to_note(api):
    response = api.post(URL, {"textContent": "x"}, "json")
    assert response.json()["type"] == "note"


@override_settings(MEMORY_MAX_CHARS=8000)
def test_it_accepts_exactly_the_maximum_length(api):
    assert create(api, "é" * 8000).status_code == 201


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"textContent": "a" * 8001}, "textContent", "8000"),
        ({"textContent": ""}, "textContent", "blank"),
        ({"textContent": "   "}, "textContent", "blank"),
        ({}, "textContent", "required"),
        ({"textContent": 42}, "textContent", "string"),
        ({"textContent": ["a"]}, "textContent", "string"),
        ({"textContent": None}, "textContent", "null"),
        ({"textContent": "a\x00b"}, "textContent", "Null characters"),
        ({"textContent": "ok", "type": "poem"}, "type", "valid choice"),
        ({"textContent": "ok", "type": 3}, "type", "valid choice"),
        ({"textContent": "ok", "text_content": "typo"}, "text_content", "Unknown field"),
    ],
)
def test_it_names_the_field_and_rule_of_bad_input(api, payload, field, words):
    error = assert_error(api.post(URL, payload, "json"), 400, "validation_error")
    assert field in error["details"]
    assert words in " ".join(error["details"][field])
    assert error["message"].startswith(field)
    assert Memory.objects.count() == 0


def test_it_refuses_a_json_array_body(api):
    error = assert_error(api.post(URL, [1, 2], "json"), 400, "validation_error")
    assert "non_field_errors" in error["details"]


def test_it_refuses_malformed_json(api):
    response = api.generic("POST", URL, '{"textContent": "x"', content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_it_refuses_a_non_json_content_type(api):
    response = api.generic("POST", URL, "textContent=x", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_it_refuses_an_oversized_body_with_413(api):
    body = '{"textContent": "' + "a" * 200_000 + '"}'
    response = api.generic("POST", URL, body, content_type="application/json")
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"]["maxBytes"] > 0
    assert Memory.objects.count() == 0


def test_it_lists_only_the_callers_memories_newest_first(api, make_user):
    other = client_for(make_user("bob@example.com"))
    create(other, "bob's")
    create_at(api, dt.datetime(2026, 1, 2, 9, tzinfo=dt.UTC), "second")
    create_at(api, dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC), "first")
    body = api.get(URL).json()
    assert [m["textContent"] for m in body["results"]] == ["second", "first"]


def test_it_filters_the_list(api):
    create_at(api, dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC), "old task", "task")
    create_at(api, dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC), "new idea", "idea")
    create_at(api, dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC), "new task", "task")

    def texts(**params):
        return [m["textContent"] for m in api.get(URL, params).json()["results"]]

    assert texts(type="task") == ["new task", "old task"]
    assert texts(createdAfter="2026-02-01T00:00:00Z") == ["new task", "new idea"]
    assert texts(createdBefore="2026-02-01T00:00:00Z") == ["old task"]
    assert texts(enrichmentStatus="pending", type="idea") == ["new idea"]
    assert texts(enrichmentStatus="enriched") == []


@pytest.mark.parametrize(
    "params",
    [{"type": "poem"}, {"createdAfter": "yesterday"}, {"limit": 0}, {"limit": 1000},
     {"cursor": "bogus"}, {"enrichmentStatus": "done"}],
)  # fmt: skip
def test_it_refuses_bad_list_parameters(api, params):
    assert_error(api.get(URL, params), 400, "validation_error")


def test_it_paginates_with_a_cursor(api):
    for i in range(5):
        create_at(api, dt.datetime(2026, 1, 1, 9, i, tzinfo=dt.UTC), f"m{i}")
    first = api.get(URL, {"limit": 2}).json()
    assert [m["textContent"] for m in first["results"]] == ["m4", "m3"]
    second = api.get(first["next"]).json()
    assert [m["textContent"] for m in second["results"]] == ["m2", "m1"]
    third = api.get(second["next"]).json()
    assert [m["textContent"] for m in third["results"]] == ["m0"]
    assert third["next"] is None


def test_pagination_stays_correct_while_rows_are_inserted(api):
    for i in range(6):
        create(api, f"old{i}")
    seen = []
    page = api.get(URL, {"limit": 2}).json()
    seen += [m["textContent"] for m in page["results"]]
    while page["next"]:
        create(api, f"new{len(seen)}")  # lands on top, must not shift the pages behind it
        page = api.get(page["next"]).json()
        seen += [m["textContent"] for m in page["results"]]
    assert seen == [f"old{i}" for i in reversed(range(6))]


def test_it_reads_updates_and_deletes_a_memory(api):
    memory_id = create(api, "draft", "note").json()["id"]
    assert api.get(detail(memory_id)).json()["textContent"] == "draft"

    Memory.objects.filter(pk=memory_id).update(
        enrichment_status="enriched", category="health", tags=["x"]
    )
    retyped = api.patch(detail(memory_id), {"type": "idea"}, "json").json()
    assert retyped["type"] == "idea" and retyped["enrichmentStatus"] == "enriched"

    rewritten = api.patch(detail(memory_id), {"textContent": "final"}, "json").json()
    assert rewritten["textContent"] == "final"
    assert rewritten["enrichmentStatus"] == "pending"
    assert rewritten["enrichedAt"] is None

    assert api.delete(detail(memory_id)).status_code == 204
    assert_error(api.get(detail(memory_id)), 404, "not_found")
    assert api.get(URL).json()["results"] == []
    tombstone = Memory.objects.get(pk=memory_id)
    assert tombstone.deleted_at is not None
    assert_error(api.delete(detail(memory_id)), 404)


def test_patch_validates_like_create(api):
    memory_id = create(api).json()["id"]
    error = assert_error(api.patch(detail(memory_id), {"textContent": ""}, "json"), 400)
    assert "textContent" in error["details"]
    assert_error(api.patch(detail(memory_id), {"type": "poem"}, "json"), 400)


def test_another_users_memory_is_404_on_every_route(api, make_user):
    memory_id = create(api, "mine").json()["id"]
    bob = client_for(make_user("bob@example.com"))
    assert_error(bob.get(detail(memory_id)), 404, "not_found")
    assert_error(bob.patch(detail(memory_id), {"textContent": "hacked"}, "json"), 404)
    assert_error(bob.delete(detail(memory_id)), 404)
    assert bob.get(URL).json()["results"] == []
    assert Memory.objects.get(pk=memory_id).text_content == "mine"
    assert Memory.objects.get(pk=memory_id).deleted_at is None


def test_an_unknown_id_is_404(api):
    assert_error(api.get(detail(uuid.uuid4())), 404, "not_found")
    assert_error(api.get(f"{URL}/not-a-uuid"), 404, "not_found")


def test_every_route_needs_a_token(anon):
    some_id = uuid.uuid4()
    assert_error(anon.get(URL), 401, "not_authenticated")
    assert_error(anon.post(URL, {"textContent": "x"}, "json"), 401)
    assert_error(anon.get(detail(some_id)), 401)
    assert_error(anon.patch(detail(some_id), {}, "json"), 401)
    assert_error(anon.delete(detail(some_id)), 401)


def test_an_unsupported_method_is_405(api):
    assert_error(api.put(URL, {}, "json"), 405, "method_not_allowed")
