"""Production: secrets are required, HTTPS assumed behind a proxy, JSON logs."""

import environ
from django.core.checks.security.base import _check_secret_key as _strong_secret

from .base import *  # noqa: F403
from .base import env, env_flag, env_required

DEBUG = False
SECRET_KEY = env_required("DJANGO_SECRET_KEY")
SIMPLE_JWT["SIGNING_KEY"] = env_required("JWT_SIGNING_KEY")  # noqa: F405
if not _strong_secret(SIMPLE_JWT["SIGNING_KEY"]):  # noqa: F405 - the rule of accounts.checks
    raise environ.ImproperlyConfigured(
        "JWT_SIGNING_KEY is weak: use 50 or more random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(64))')"
    )
ALLOWED_HOSTS = env_required("DJANGO_ALLOWED_HOSTS").split(",")
DEMO_USER_ALLOWED = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_flag("DJANGO_SECURE_SSL_REDIRECT", True)
# Health probes come from the orchestrator over plain HTTP; so does Prometheus, scraping web
# inside the compose network (/metrics still requires the bearer token; a redirect would not
# protect a token already sent).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_flag("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
# HSTS preload is a per-domain commitment the operator opts into with the flag above.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

LOGGING["handlers"]["console"]["formatter"] = env.str("LOG_FORMAT", default="json")  # noqa: F405
