"""Test settings: the same as production in behaviour, fast password hashing, local cache."""

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
