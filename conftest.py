"""Fixtures shared by every app's tests."""

from __future__ import annotations

import os
import shutil

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import tokens_for_user

# The OpenAI stub, the session's Celery worker and the process environment, defined once.
pytest_plugins = ["enrichment.testing.fixtures"]

PASSWORD = "correct-horse-battery-staple"


def pytest_collection_modifyitems(config, items):
    """Skip, with a reason, what needs a service this run does not have."""
    redis_url = os.environ.get("REDIS_URL", "")
    redis_reason = None
    if not redis_url:
        redis_reason = "REDIS_URL is not set; these tests need a real Redis"
    else:
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        except Exception as exc:  # noqa: BLE001
            redis_reason = f"Redis at REDIS_URL is unreachable ({type(exc).__name__})"
    for item in items:
        if redis_reason and "redis" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=redis_reason))


@pytest.fixture(autouse=True)
def _fresh_cache():
    from costs.pricing import prices_forget

    cache.clear()
    prices_forget()
    yield
    cache.clear()
    prices_forget()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own on a free port, to stop and start (never the machine's
    shared Redis); skipped where redis-server is not installed."""
    from enrichment.testing import processes

    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server on PATH (CI has it) to stop and start a private Redis")
    server = processes.RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_user(db):
    def make(email: str = "user@example.com", *, staff: bool = False, **extra) -> User:
        return User.objects.create_user(email=email, password=PASSWORD, is_staff=staff, **extra)

    return make


@pytest.fixture
def user(make_user) -> User:
    return make_user("alice@example.com")


@pytest.fixture
def staff(make_user) -> User:
    return make_user("staff@example.com", staff=True)


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for_user(user)['accessToken']}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    return client_for(user)


@pytest.fixture
def staff_api(staff) -> APIClient:
    return client_for(staff)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def enrichment_paused(settings):
    """For transactional tests that create memories but are not about enrichment: processing
    is off, so none of their jobs runs while the test runs or while its tables are flushed
    (as ENRICHMENT_WORKER_ENABLED=false leaves jobs pending in production)."""
    settings.ENRICHMENT_WORKER_ENABLED = False
