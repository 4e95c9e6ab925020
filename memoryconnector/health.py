"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from alerting.selectors import alerting_configured, channels_status

logger = logging.getLogger(__name__)


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: database unreachable: %s", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    return None


def _check_redis() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2
        )
        client.ping()
    except Exception as exc:  # noqa: BLE001
        logger.warning("readiness: redis unreachable: %s", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    return None


def _alerting_details() -> dict:
    channels = [channel["name"] for channel in channels_status() if channel["configured"]]
    return {
        "alerts": "ok" if alerting_configured() else "no channel configured (log only)",
        "alertChannels": channels,
    }


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok", "timestamp": timezone.now().isoformat()})


@require_GET
def readyz(request):
    checks = {"database": _check_database()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis()
    down = [name for name, problem in checks.items() if problem]
    body = {
        "status": "unavailable" if down else "ok",
        "checks": {name: problem or "ok" for name, problem in checks.items()},
        # Information, never a reason to be unready: with no channel alerts still reach the log.
        "details": _alerting_details(),
        "timestamp": timezone.now().isoformat(),
    }
    if down:
        body["error"] = {
            "code": "service_unavailable",
            "message": "Not ready: " + ", ".join(down) + " down.",
            "details": {name: checks[name] for name in down},
        }
    return JsonResponse(body, status=503 if down else 200)
