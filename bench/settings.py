"""Production settings plus the ingest benchmark's floor endpoint (bench.floor)."""

from memoryconnector.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.floor"
