"""Beat purges expired Idempotency-Keys: the schedule entry names a registered task on the
maintenance queue, and that task deletes the expired keys and only those."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from memories.models import IdempotencyKey
from memoryconnector.celery import app as celery_app

ENTRY = "idempotency-keys-purge"


@pytest.fixture(autouse=True)
def _tasks_discovered():
    """What a worker does at start: import every app's tasks module (autodiscovery), so the
    entry is resolved the way beat's worker resolves it, not through an import of ours."""
    celery_app.loader.import_default_modules()


def test_beat_runs_the_idempotency_key_purge_hourly_on_maintenance():
    entry = django_settings.CELERY_BEAT_SCHEDULE[ENTRY]
    assert entry["task"] == "memories.idempotency_keys_purge"
    assert entry["task"] in celery_app.tasks
    assert entry["schedule"] == 3600.0
    assert entry["options"]["expires"] == 3600.0
    assert celery_app.amqp.router.route({}, entry["task"])["queue"].name == "maintenance"


@pytest.mark.django_db
def test_the_scheduled_task_deletes_expired_keys_only(user, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 24
    now = timezone.now()
    for key, age in [("expired", 25), ("long-expired", 24 * 30), ("current", 23)]:
        IdempotencyKey.objects.create(
            user=user,
            key=key,
            fingerprint="0" * 64,
            state=IdempotencyKey.State.COMPLETED,
            created_at=now - dt.timedelta(hours=age),
        )
    task = celery_app.tasks[django_settings.CELERY_BEAT_SCHEDULE[ENTRY]["task"]]

    assert task.apply().get() == 2
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["current"]
    assert task.apply().get() == 0  # a second run finds nothing
