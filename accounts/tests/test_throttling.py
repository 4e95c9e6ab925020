"""Login throttles: per client address (X-Forwarded-For trusted only as far as NUM_PROXIES says)
and per account whatever the address; the admin site's login included. The account lockout
fails open when the cache is unreachable."""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid

import pytest
import time_machine
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client
from rest_framework.test import APIClient

from accounts.throttling import AuthThrottle
from alerting.tests.stubs import free_port
from common.testing import assert_error
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture
def three_per_minute(monkeypatch):
    monkeypatch.setattr(AuthThrottle, "THROTTLE_RATES", {"auth": "3/min"})


def post_login(email: str, password: str, **headers):
    return APIClient().post(LOGIN, {"email": email, "password": password}, "json", **headers)


def test_it_throttles_by_socket_address_whatever_x_forwarded_for_claims(three_per_minute, user):
    for i in range(3):
        response = post_login(f"guess{i}@example.com", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
        assert_error(response, 401)

    spoofed = post_login(user.email, PASSWORD, HTTP_X_FORWARDED_FOR="10.0.0.99")

    assert_error(spoofed, 429, "throttled")


def test_it_takes_the_address_the_trusted_proxy_saw(three_per_minute, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # The client may put anything first; the proxy appends the address it saw.
    for _ in range(3):
        post_login("x@example.com", "wrong", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.1")

    same_client = post_login(user.email, PASSWORD, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.1")
    other_client = post_login(user.email, PASSWORD, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.2")

    assert_error(same_client, 429, "throttled")
    assert other_client.status_code == 200


def test_it_locks_an_account_after_failed_logins_from_many_addresses(user, make_user, settings):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 5
    settings.LOGIN_LOCKOUT_SECONDS = 300
    bob = make_user("bob@example.com")
    with time_machine.travel(dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC), tick=False) as clock:
        for i in range(5):
            assert_error(post_login(user.email, "wrong", REMOTE_ADDR=f"10.0.1.{i}"), 401)

        locked = post_login(user.email.upper(), PASSWORD, REMOTE_ADDR="10.0.2.1")
        error = assert_error(locked, 429, "throttled")
        assert int(locked["Retry-After"]) == 300
        assert error["details"] == {"retryAfterSeconds": 300}
        # Another account is not affected.
        assert post_login(bob.email, PASSWORD, REMOTE_ADDR="10.0.2.1").status_code == 200

        clock.shift(dt.timedelta(seconds=301))
        assert post_login(user.email, PASSWORD, REMOTE_ADDR="10.0.2.2").status_code == 200


def test_it_forgets_failures_after_a_successful_login(user, settings):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 3
    for round_ in range(2):
        for i in range(2):
            assert_error(post_login(user.email, "wrong", REMOTE_ADDR=f"10.0.{round_}.{i}"), 401)
        assert post_login(user.email, PASSWORD, REMOTE_ADDR="10.0.9.9").status_code == 200


def test_it_locks_unknown_emails_the_same_way(db, settings):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 2
    for i in range(2):
        assert_error(post_login("nobody@example.com", "x", REMOTE_ADDR=f"10.0.3.{i}"), 401)
    assert_error(post_login("nobody@example.com", "x", REMOTE_ADDR="10.0.3.9"), 429, "throttled")


@pytest.mark.redis
def test_it_locks_an_account_with_the_lockout_kept_in_redis(user, settings, monkeypatch):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": f"lockout-test-{uuid.uuid4().hex}",
        }
    }
    monkeypatch.setattr(AuthThrottle, "cache", LocMemCache("throttle", {}))
    settings.LOGIN_LOCKOUT_ATTEMPTS = 3
    for i in range(3):
        assert_error(post_login(user.email, "wrong", REMOTE_ADDR=f"10.0.5.{i}"), 401)

    locked = post_login(user.email, PASSWORD, REMOTE_ADDR="10.0.5.9")

    assert_error(locked, 429, "throttled")
    assert 0 < int(locked["Retry-After"]) <= 300


def test_it_logs_in_without_a_lockout_when_the_cache_is_unreachable(
    user, settings, monkeypatch, caplog
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    # The address throttle's own behaviour on a cache outage is not this test's subject.
    monkeypatch.setattr(AuthThrottle, "cache", LocMemCache("throttle", {}))
    caplog.set_level(logging.WARNING, logger="accounts.lockout")

    assert_error(post_login(user.email, "wrong"), 401, "authentication_failed")
    assert post_login(user.email, PASSWORD).status_code == 200

    warnings = [r.getMessage() for r in caplog.records if r.name == "accounts.lockout"]
    assert warnings and all("login lockout not enforced" in w for w in warnings)


def admin_post(client: Client, email: str, password: str, **extra):
    return client.post(ADMIN_LOGIN, {"username": email, "password": password}, **extra)


def test_it_throttles_the_admin_login_by_address(three_per_minute, staff):
    client = Client()
    for _ in range(3):
        assert admin_post(client, staff.email, "wrong").status_code == 200  # the form again

    response = admin_post(client, staff.email, PASSWORD)

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert b"Too many login attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_it_locks_a_staff_account_on_the_admin_login_whatever_the_address(staff, settings):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 5
    client = Client()
    for i in range(5):
        response = admin_post(client, staff.email, "wrong", REMOTE_ADDR=f"10.0.4.{i}")
        assert response.status_code == 200

    locked = admin_post(client, staff.email, PASSWORD, REMOTE_ADDR="10.0.4.99")

    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # The API login shares the lockout.
    assert_error(post_login(staff.email, PASSWORD, REMOTE_ADDR="10.0.4.98"), 429, "throttled")


def test_it_still_logs_staff_in_to_the_admin(staff):
    client = Client()
    response = admin_post(client, staff.email, PASSWORD)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
