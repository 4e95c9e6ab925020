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


def run_in_threads(count: int, target) -> list:
    """Call `target(index)` from `count` threads released at once (a barrier); each thread
    closes its database connection. Returns the results in index order; fails on any error."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = target(index)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [], errors  # noqa: S101
    return results
