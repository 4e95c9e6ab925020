"""A Celery worker bootstep that writes this worker's heartbeat every few seconds."""

from __future__ import annotations

import logging
import os

from celery import bootsteps
from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)


class HeartbeatStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.started_at = timezone.now()

    def _beat(self, worker) -> None:
        from .services import heartbeat_beat

        try:
            heartbeat_beat(hostname=worker.hostname, pid=os.getpid(), started_at=self.started_at)
        except Exception as exc:  # noqa: BLE001 - a missed beat must not stop the worker
            logger.warning("heartbeat not written: %s", type(exc).__name__)
        finally:
            # The timer thread holds no connection between beats (one every few seconds).
            connection.close()

    def start(self, worker) -> None:
        self._beat(worker)
        self.tref = worker.timer.call_repeatedly(
            settings.ENRICHMENT_HEARTBEAT_SECONDS, self._beat, (worker,), priority=10
        )

    def stop(self, worker) -> None:
        from .services import heartbeat_stop

        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            heartbeat_stop(hostname=worker.hostname)
        except Exception as exc:  # noqa: BLE001
            logger.warning("heartbeat not removed: %s", type(exc).__name__)
