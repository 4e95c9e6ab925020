"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium (or CHROMIUM_PATH) driven
by Playwright with executable_path. The `browser` and `page` fixtures are in conftest.py; a
browser test module sets `pytestmark = BROWSER_MARKS` (skipped, with the reason, where Chromium
is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Screenshots kept as CI artifacts.
RESULTS = Path(django_settings.BASE_DIR) / "test-results"
TIMEOUT_MS = 15_000

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
    ),
]
