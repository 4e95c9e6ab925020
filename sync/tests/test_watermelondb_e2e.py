"""WatermelonDB's real synchronize() (Node 20, LokiJS) against our live server: gunicorn and a
Celery worker in their own processes on a private Redis, enrichment through the real `openai`
client and the local stub. The scenario is clients/watermelondb/e2e.test.mjs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from django.conf import settings

from accounts.services import tokens_for_user
from enrichment.models import EnrichmentJob
from enrichment.testing import processes
from enrichment.testing.openai_stub import OpenAIStub
from memories.models import Memory

pytestmark = [
    pytest.mark.watermelondb,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

CLIENT = settings.BASE_DIR / "clients" / "watermelondb"
LOGS = settings.BASE_DIR / "test-results"


@pytest.fixture
def node_client():
    node = shutil.which("node")
    if not node:
        pytest.skip("needs Node 20 on PATH (CI has it)")
    if not (CLIENT / "node_modules" / "@nozbe" / "watermelondb").is_dir():
        pytest.skip(f"run `npm ci` in {CLIENT} first (CI does)")
    return node


@pytest.fixture
def live_stack():
    """OpenAI stub, private Redis, gunicorn and a Celery worker; stopped in reverse order."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server on PATH (CI has it)")
    LOGS.mkdir(exist_ok=True)
    stub = OpenAIStub().start()
    redis = processes.RedisServer().start()
    env = {**processes.django_env(openai_base_url=stub.base_url), "REDIS_URL": redis.url}
    port = processes.free_port()
    running = []
    try:
        running.append(processes.gunicorn(env, port=port, log=LOGS / "sync-e2e-web.log").start())
        worker = processes.celery_worker(env, name="sync-e2e", log=LOGS / "sync-e2e-worker.log")
        running.append(worker.start())
        yield f"http://127.0.0.1:{port}", stub
    finally:
        for process in reversed(running):
            process.stop()
        redis.stop()
        stub.stop()


def test_it_syncs_two_watermelondb_devices_end_to_end(node_client, live_stack, user):
    base_url, stub = live_stack
    result = subprocess.run(  # noqa: S603 - our own test script
        [node_client, "--test", "--test-force-exit", "--test-reporter=spec", "e2e.test.mjs"],
        cwd=CLIENT,
        env={
            "PATH": os.environ["PATH"],
            "SYNC_BASE_URL": base_url,
            "SYNC_TOKEN": tokens_for_user(user)["accessToken"],
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    line = next(line for line in output.splitlines() if "E2E-RESULT " in line)
    report = json.loads(line.split("E2E-RESULT ", 1)[1])
    assert 409 in report["pushes"]["b"]

    # The server agrees with what the devices ended with, and each pushed create and text
    # change was enriched once per text through the real provider client.
    server = {record["id"]: record for record in report["server"]}
    live = Memory.objects.alive().filter(user=user)
    assert {str(pk) for pk in live.values_list("pk", flat=True)} == set(server)
    for memory in live:
        assert server[str(memory.pk)]["text_content"] == memory.text_content
        assert memory.enrichment_status == "enriched" and memory.category
    assert Memory.objects.filter(user=user, deleted_at__isnull=False).count() == 1
    assert not EnrichmentJob.objects.filter(status="failed").exists()
    assert len(stub.calls) >= 2 * Memory.objects.filter(user=user).count()
