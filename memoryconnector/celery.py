"""The Celery app: configuration from Django settings (CELERY_*), tasks autodiscovered, and the
worker heartbeat step."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memoryconnector.settings.local")

app = Celery("memoryconnector")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add("enrichment.worker:HeartbeatStep")
