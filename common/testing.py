"""Assertions shared by the test suites."""


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` with the API's one JSON error shape; returns its `error`."""
    assert response.status_code == status, response.content  # noqa: S101
    assert response["Content-Type"].startswith("application/json")  # noqa: S101
    body = response.json()
    assert set(body) == {"error"}, body  # noqa: S101
    assert set(body["error"]) == {"code", "message", "details"}  # noqa: S101
    if code:
        assert body["error"]["code"] == code, body  # noqa: S101
    return body["error"]
