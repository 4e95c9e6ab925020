"""Test settings: the same as production in behaviour, fast password hashing, local cache."""

import os

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-secret-key-not-used-anywhere-else-0123456789"  # noqa: S105
SIMPLE_JWT["SIGNING_KEY"] = SECRET_KEY  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttling and other cache users get a private cache per test process; Redis-backed pieces
# read REDIS_URL themselves.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DEMO_USER_ALLOWED = False
LOG_LEVEL = env.str("LOG_LEVEL", default="WARNING")
LOGGING["root"]["level"] = LOG_LEVEL  # noqa: F405

# Pipeline tests run a real worker on Redis when REDIS_URL is set (CI), else kombu's in-memory
# transport, which works for a worker thread inside the test process.
CELERY_BROKER_URL = env.str("REDIS_URL", default="") or "memory://"
# A key prefix per test run, so two runs sharing one Redis never consume each other's tasks.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "global_keyprefix": f"mc-test-{os.getpid()}:",
}
ENRICHMENT_HEARTBEAT_SECONDS = 1

# Worker threads in tests must not keep connections open past their task; a worker process of
# a test may (TEST_CONN_MAX_AGE, the connection-reuse fault test).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("TEST_CONN_MAX_AGE", default=0)  # noqa: F405
# ...and Celery closes it after every task unless a test keeps it.
CELERY_DB_REUSE_MAX = 1000 if DATABASES["default"]["CONN_MAX_AGE"] else None  # noqa: F405
