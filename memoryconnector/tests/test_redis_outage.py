"""Redis down: every endpoint still answers. The real django-redis cache (the project's own
settings, memoryconnector.settings.base.redis_cache) pointed at a port where nothing listens, and
at a private redis-server that the test stops and starts again."""

from __future__ import annotations

import logging
import uuid

import pytest

from accounts.api import AuthThrottle
from conftest import PASSWORD
from enrichment.testing.processes import free_port
from memories.models import Memory
from memoryconnector.settings.base import redis_cache

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
REGISTER = "/api/v1/auth/register"
MEMORIES = "/api/v1/memories"


@pytest.fixture
def redis_cache_at(settings):
    """Point the cache (and /readyz) at `url` with the production cache settings."""

    def point(url: str) -> None:
        settings.CACHES = {"default": redis_cache(url)}
        settings.REDIS_URL = url

    return point


@pytest.fixture
def auth_rate_3(monkeypatch):
    monkeypatch.setattr(AuthThrottle, "THROTTLE_RATES", {"auth": "3/min"})


def login(anon, user) -> dict:
    response = anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json")
    assert response.status_code == 200, response.content
    return response.json()


def assert_every_endpoint_answers(anon, user) -> None:
    """Log in, refresh, register, create and list: no 500 while the cache is unreachable."""
    tokens = login(anon, user)
    refreshed = anon.post(REFRESH, {"refreshToken": tokens["refreshToken"]}, "json")
    assert refreshed.status_code == 200, refreshed.content
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    registered = anon.post(REGISTER, {"email": email, "password": "long-passphrase-1"}, "json")
    assert registered.status_code == 201, registered.content

    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['accessToken']}")
    created = anon.post(MEMORIES, {"textContent": "Written while Redis was down"}, "json")
    assert created.status_code == 201, created.content
    listed = anon.get(MEMORIES)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["results"]] == [created.json()["id"]]
    anon.credentials()


def test_it_answers_every_endpoint_with_redis_unreachable(
    anon, user, redis_cache_at, auth_rate_3, caplog
):
    # A password in the URL, to prove it never reaches the log.
    port = free_port()  # nothing listens there
    redis_cache_at(f"redis://:cache-pass-s3cret@127.0.0.1:{port}/0")
    caplog.set_level(logging.WARNING)

    for _ in range(3):
        login(anon, user)
    assert_every_endpoint_answers(anon, user)  # six auth requests at 3/min: none refused
    assert Memory.objects.count() == 1

    ready = anon.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "unreachable (ConnectionError)"

    outage = [r for r in caplog.records if r.name == "memoryconnector.cache"]
    assert outage, "an ignored cache error must be logged"
    assert {r.levelno for r in outage} == {logging.WARNING}
    assert (
        outage[0]
        .getMessage()
        .startswith("cache unavailable, throttles fail open: ConnectionError: ")
    )
    assert f"127.0.0.1:{port}" in outage[0].getMessage()
    assert all(r.exc_info is None and not r.exc_text for r in outage)  # one line, no traceback
    assert "cache-pass-s3cret" not in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.faults
def test_it_fails_open_while_redis_is_stopped_and_throttles_again_when_it_is_back(
    anon, user, private_redis, redis_cache_at, auth_rate_3
):
    redis_cache_at(private_redis.url)

    # Redis up: the throttle counts in Redis and refuses the fourth request.
    for _ in range(3):
        login(anon, user)
    assert anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json").status_code == 429
    assert anon.get("/readyz").status_code == 200

    private_redis.stop()  # mid-test: the counters are gone with it, nothing can be counted

    assert_every_endpoint_answers(anon, user)
    ready = anon.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")

    private_redis.start()  # same port: the pool reconnects by itself

    assert anon.get("/readyz").status_code == 200
    for _ in range(3):
        login(anon, user)
    assert anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json").status_code == 429
