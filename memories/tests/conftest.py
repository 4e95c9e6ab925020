"""The OpenAI stub and the real Celery worker, shared with the enrichment tests."""

from enrichment.tests.conftest import (  # noqa: F401 - fixtures used by search tests
    _session_worker,
    celery_worker,
    openai_stub,
    use_openai,
)
