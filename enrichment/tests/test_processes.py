"""The worker and beat as real processes (enrichment.testing.processes): the start-up line the
reference's operators look for, "Starting enrichment worker" with pollIntervalMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enrichment.testing import processes
from enrichment.tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def start_lines(log: Path) -> list[dict]:
    """The start-up records of a process's JSON log (Celery's banner and other text skipped)."""
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message", "").startswith(
            "Starting enrichment worker"
        ):
            found.append(record)
    return found


def test_it_logs_starting_enrichment_worker_once_from_a_real_worker_and_beat(
    process_env, started, tmp_path
):
    env = {
        **process_env,
        # A broker of the process's own: nothing shared with other tests is consumed or sent.
        "CELERY_BROKER_URL": "memory://",
        "LOG_FORMAT": "json",
        "ENRICHMENT_POLL_INTERVAL_MS": "1234",
        "ENRICHMENT_BATCH_SIZE": "7",
    }
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = started(processes.celery_worker(env, name="start", concurrency=2, log=worker_log))
    beat = started(processes.celery_beat(env, schedule=tmp_path / "schedule", log=beat_log))
    wait_for(
        lambda: start_lines(worker_log) and start_lines(beat_log),
        timeout=60,
        what="the start-up line of the worker and of beat",
    )
    # Stopped, so each log holds the whole life of its process: one line each, not one per
    # pool child or per sweep.
    worker.stop()
    beat.stop()

    fields = {"pollIntervalMs": 1234, "batchSize": 7, "provider": "openai", "enabled": True}
    for log, role in ((worker_log, "worker"), (beat_log, "beat")):
        (line,) = start_lines(log)
        assert line["message"] == (
            f"Starting enrichment worker ({role}): pollIntervalMs=1234 batchSize=7 "
            "provider=openai enabled=True"
        )
        assert line["level"] == "INFO" and line["logger"] == "enrichment.tasks"
        assert {key: line[key] for key in fields} == fields and line["role"] == role
