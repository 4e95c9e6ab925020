"""The Celery app: configuration from Django settings (CELERY_*), tasks autodiscovered, the
worker heartbeat step, and the check of kept database connections before each task."""

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memoryconnector.settings.local")

app = Celery("memoryconnector")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add("enrichment.worker:HeartbeatStep")


@task_prerun.connect(dispatch_uid="memoryconnector.db_connections_check")
def _db_connections_check(**kwargs) -> None:
    """Workers keep their database connection across tasks (CELERY_DB_REUSE_MAX): before each
    task, one older than CONN_MAX_AGE or broken is closed, and CONN_HEALTH_CHECKS pings a kept
    one before its first statement, so a connection the server dropped is replaced instead of
    failing the task."""
    from django.db import close_old_connections

    close_old_connections()
