"""A weak JWT signing key is refused like a weak SECRET_KEY: by check --deploy, and at start-up
with the production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from django.core import checks

STRONG = secrets.token_urlsafe(64)


def deploy_warnings() -> list[str]:
    return [m.id for m in checks.run_checks(include_deployment_checks=True, tags=["security"])]


def test_check_deploy_warns_of_a_weak_jwt_signing_key(settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": "changeme"}
    assert "accounts.W001" in deploy_warnings()
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": STRONG}
    assert "accounts.W001" not in deploy_warnings()


def test_production_refuses_to_start_with_a_weak_jwt_signing_key():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "memoryconnector.settings.production",
        "DJANGO_SECRET_KEY": STRONG,
        "DJANGO_ALLOWED_HOSTS": "example.com",
    }
    run = [sys.executable, "-c", "import django; django.setup()"]
    weak = subprocess.run(  # noqa: S603 - our own interpreter
        run, env={**env, "JWT_SIGNING_KEY": "secret"}, capture_output=True, text=True, check=False
    )
    assert weak.returncode != 0 and "JWT_SIGNING_KEY is weak" in weak.stderr
    strong = subprocess.run(  # noqa: S603
        run, env={**env, "JWT_SIGNING_KEY": STRONG}, capture_output=True, text=True, check=False
    )
    assert strong.returncode == 0, strong.stderr
