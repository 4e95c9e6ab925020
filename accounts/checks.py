"""`check --deploy`: the JWT signing key must be as strong as Django asks SECRET_KEY to be
(Django's own rule: 50+ characters, 5+ distinct, no "django-insecure-" prefix)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.core.checks.security.base import _check_secret_key as strong_secret


@register(Tags.security, deploy=True)
def check_jwt_signing_key(app_configs, **kwargs):
    if not strong_secret(settings.SIMPLE_JWT.get("SIGNING_KEY") or ""):
        return [
            Warning(
                "JWT_SIGNING_KEY is weak: anyone who guesses it can mint access tokens for any "
                "user. Use 50 or more random characters (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(64))').",
                id="accounts.W001",
            )
        ]
    return []
