"""Cross-cutting behaviour: error shape everywhere under /api/, health, docs, staff stats."""

import logging

import pytest
from django.db import DatabaseError
from django.test import override_settings

from common.testing import assert_error
from memories.models import Memory
from memories.services import embedding_save

pytestmark = pytest.mark.django_db


def test_unknown_api_addresses_answer_json_404(anon, api):
    assert_error(anon.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(anon.post("/api/v2/memories", {}, "json"), 404, "not_found")
    assert_error(api.get("/api/v1/memories/"), 404, "not_found")


@override_settings(DEBUG=True)
def test_unknown_api_addresses_are_json_even_in_debug(anon):
    assert_error(anon.get("/api/v1/nothing-here"), 404, "not_found")


def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(api, monkeypatch):
    from memories import selectors

    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "memory_list", explode)
    api.raise_request_exception = False
    response = api.get("/api/v1/memories")
    error = assert_error(response, 500, "server_error")
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in error["message"]


def test_a_database_outage_is_a_clean_503(api, monkeypatch):
    from memories import selectors

    def down(**kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(selectors, "memory_list", down)
    response = api.get("/api/v1/memories")
    assert_error(response, 503, "service_unavailable")
    assert response["Retry-After"]


def test_a_bad_content_length_is_400(api):
    response = api.generic(
        "POST", "/api/v1/memories", "{}", content_type="application/json", CONTENT_LENGTH="x"
    )
    assert_error(response, 400, "bad_request")


def test_healthz_says_the_process_is_up(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_readyz_checks_the_database(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_readyz_names_what_is_down(anon):
    response = anon.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"].startswith("unreachable")
    assert body["error"]["code"] == "service_unavailable"
    assert "redis" in body["error"]["message"]


def test_stats_are_staff_only(anon, api, staff_api):
    assert_error(anon.get("/api/v1/admin/stats"), 401, "not_authenticated")
    assert_error(api.get("/api/v1/admin/stats"), 403, "permission_denied")
    assert staff_api.get("/api/v1/admin/stats").status_code == 200


def test_stats_count_users_memories_and_embeddings(api, staff_api, user):
    for text in ["a", "b", "c"]:
        api.post("/api/v1/memories", {"textContent": text}, "json")
    gone = Memory.objects.first()
    embedding_save(memory_id=gone.pk, model="m", dimensions=2, vector=[1.0, 0.0])
    api.delete(f"/api/v1/memories/{gone.pk}")
    kept = Memory.objects.alive().first()
    embedding_save(memory_id=kept.pk, model="m", dimensions=2, vector=[0.6, 0.8])
    embedding_save(memory_id=gone.pk, model="m", dimensions=2, vector=[0.6, 0.8])
    body = staff_api.get("/api/v1/admin/stats").json()
    assert body["users"] == 2
    assert body["memories"] == 2
    assert body["memoriesToday"] == 2
    assert body["embeddings"] == 1
    assert body["timestamp"]


def test_the_schema_and_swagger_ui_are_served_offline(anon):
    schema = anon.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    # What is typed into Authorize is sent as the header: "Bearer <token>", as the notes say.
    scheme = spec["components"]["securitySchemes"]["jwtAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Bearer <your-access-token>" in scheme["description"]
    memory = spec["components"]["schemas"]["Memory"]["properties"]
    assert {"textContent", "enrichmentStatus", "createdAt"} <= set(memory)
    create = spec["paths"]["/api/v1/memories"]["post"]
    assert create["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    docs = anon.get("/api/v1/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower()


def test_the_schema_validates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_request_logs_carry_no_tokens_and_name_the_user(api, user, caplog):
    caplog.set_level(logging.INFO, logger="memoryconnector.request")
    api.get("/api/v1/memories?token=abc")
    record = next(r for r in caplog.records if r.name == "memoryconnector.request")
    assert record.path == "/api/v1/memories"
    assert record.status == 200
    assert record.user_id == str(user.pk)
    assert "token=abc" not in record.getMessage()


def test_the_redaction_filter_removes_credentials():
    from common.logging import redact

    line = (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl "
        'key=sk-abcdefghijklmnop url=redis://user:hunter2@host password="hunter2" xoxb-123-abc'
    )
    cleaned = redact(line)
    for secret in ("eyJhbGci", "sk-abcdefghijklmnop", "hunter2", "xoxb-123-abc"):
        assert secret not in cleaned


def test_the_front_page_leads_to_the_api_docs(anon):
    response = anon.get("/")
    assert response.status_code == 302 and response["Location"] == "/api/v1/docs"
