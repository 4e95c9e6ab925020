import pytest


@pytest.fixture(autouse=True)
def _enrichment_paused(settings):
    """The suite's session Celery worker (enrichment tests) may be running and would enrich the
    memories these tests create, adding changes of its own to their pulls. Paused processing
    leaves the jobs pending (as the worker switch does in production)."""
    settings.ENRICHMENT_WORKER_ENABLED = False
