"""The pipeline benchmark's floor: a Celery task that does nothing.

Loaded by the benchmark's workers with `celery -A memoryconnector worker -I bench.noop_tasks`,
so it runs under the app's own settings (broker, acks_late, prefetch, Django fixup) beside the
real tasks; it goes to the app's default queue, which those workers consume."""

from celery import shared_task

NOOP_TASK = "bench.noop"


@shared_task(name=NOOP_TASK, ignore_result=True)
def noop() -> None:
    """Nothing: what is left is Celery's own cost per task (publish, deliver, run, ack)."""
