"""Per-account login lockout: failed logins for one email lock it briefly, whatever the address
they come from (the per-address throttle cannot see an attacker who rotates addresses).

State lives in Django's cache. The cache is a helper, not a gate: when it is unreachable the
lockout is not enforced (logins still work, the per-address throttle and password hashing still
apply) and a warning is logged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from rest_framework import status

from common.errors import DomainError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoginLockedError(DomainError):
    """Too many failed logins for this account; `wait` seconds remain."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "throttled"

    def __init__(self, wait: int):
        super().__init__(
            f"Too many failed logins for this account; try again in {wait} seconds.",
            details={"retryAfterSeconds": wait},
            headers={"Retry-After": str(wait)},
        )
        self.wait = wait


def _cache_call(operation: str, call: Callable[[], T], default: T) -> T:
    """`call()`, or `default` when the cache fails (fail open, with a warning)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any cache failure means "no lockout data"
        logger.warning(
            "login lockout not enforced: the cache failed during %s (%s)",
            operation,
            type(exc).__name__,
        )
        return default


def _keys(email: str) -> tuple[str, str]:
    # A digest: cache keys stay short and free of the address itself.
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"login-failures:{digest}", f"login-locked:{digest}"


def _enabled() -> bool:
    return settings.LOGIN_LOCKOUT_ATTEMPTS > 0 and settings.LOGIN_LOCKOUT_SECONDS > 0


def login_locked_for(email: str) -> int:
    """Seconds this account stays locked; 0 when it is not locked."""
    if not _enabled():
        return 0
    _, locked_key = _keys(email)
    until = _cache_call("check", lambda: cache.get(locked_key), None)
    if until is None:
        return 0
    return max(0, math.ceil(float(until) - time.time()))


def login_locked_check(email: str) -> None:
    """Raise LoginLockedError when this account is locked."""
    wait = login_locked_for(email)
    if wait:
        raise LoginLockedError(wait)


def login_failed(email: str) -> None:
    """Count a failed login; the LOGIN_LOCKOUT_ATTEMPTS-th within the window locks the account."""
    if not _enabled():
        return
    failures_key, locked_key = _keys(email)
    window = settings.LOGIN_LOCKOUT_SECONDS

    def count() -> int:
        # add() starts the window at the first failure; incr() is atomic on Redis.
        cache.add(failures_key, 0, timeout=window)
        try:
            return cache.incr(failures_key)
        except ValueError:  # the window expired between add() and incr()
            cache.set(failures_key, 1, timeout=window)
            return 1

    failures = _cache_call("count", count, 0)
    if failures >= settings.LOGIN_LOCKOUT_ATTEMPTS:

        def lock() -> None:
            cache.set(locked_key, time.time() + window, timeout=window)
            cache.delete(failures_key)

        _cache_call("lock", lock, None)
        logger.warning("login locked for %s seconds after %s failures", window, failures)


def login_succeeded(email: str) -> None:
    """A successful login forgets the account's failures."""
    if not _enabled():
        return
    failures_key, _ = _keys(email)
    _cache_call("reset", lambda: cache.delete(failures_key), None)
