"""Hostile input gets a 400 in the error shape, never a 500: JSON nested thousands deep, a
tampered pagination cursor, a forged token."""

from __future__ import annotations

import base64

import pytest

from common.testing import assert_error

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    "path",
    ["/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh", "/api/v1/memories"],
)
def test_json_nested_thousands_deep_is_a_clean_400(api, path):
    response = api.generic("POST", path, DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"
    assert "nested" in response.json()["error"]["message"]


def test_a_tampered_cursor_is_a_clean_400(api):
    position = base64.b64encode(b"p=not-a-date&r=0").decode()
    response = api.get("/api/v1/memories", {"cursor": position})
    assert_error(response, 400, "validation_error")
    assert response.json()["error"]["details"] == {"cursor": ["Invalid cursor."]}


def test_a_forged_token_gets_a_sentence_not_an_object_dump(anon):
    anon.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    response = anon.get("/api/v1/auth/me")
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert message.endswith(".") and "{" not in message and "ErrorDetail" not in message


def test_swagger_does_not_keep_the_token_in_local_storage(anon):
    script = anon.get("/api/v1/docs", {"script": ""}).content.decode()  # Swagger UI's start-up
    assert '"persistAuthorization": false' in script


@pytest.mark.parametrize("path", ["/api/v1/docs", "/admin/login/", "/api/v1/docs?script="])
def test_pages_carry_a_content_security_policy_without_inline_scripts(anon, path):
    response = anon.get(path)
    assert response.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    if "script" not in path:
        assert "<script>" not in response.content.decode()  # no inline script on the page
