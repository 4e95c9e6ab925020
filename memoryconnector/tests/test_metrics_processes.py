"""/metrics from a running gunicorn (two workers, multiprocess mode) and a Celery worker: every
gunicorn process's requests are counted in one scrape, the gauges equal the staff API's, and a
job run in another process shows in web's scrape."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts.services import tokens_for_user
from enrichment.testing import processes
from enrichment.tests.conftest import LOGS, wait_for
from memories.services import memory_create

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-process-token"  # noqa: S105


def get(port: int, path: str, bearer: str) -> bytes:
    request = urllib.request.Request(  # noqa: S310 - our own server on loopback
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {bearer}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.read()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = get(port, "/metrics", TOKEN).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_it_scrapes_a_gunicorn_and_worker_pair(process_env, started, make_user, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        **process_env,
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "CELERY_BROKER_URL": "memory://",
    }
    port = processes.free_port()
    started(processes.gunicorn(env, port=port, workers=2, log=LOGS / "metrics-web.log"))
    started(processes.celery_worker(env, name="metrics", log=LOGS / "metrics-worker.log"))
    staff = tokens_for_user(make_user("ops@example.com", staff=True))["accessToken"]

    def worker_status() -> dict:
        return json.loads(get(port, "/api/v1/admin/enrichment-worker", staff))

    wait_for(lambda: worker_status()["worker"]["isRunning"], timeout=60, what="a live worker")
    for _ in range(20):
        assert json.loads(get(port, "/healthz", ""))["status"] == "ok"
    samples = scrape(port)
    status = worker_status()
    breaker = json.loads(get(port, "/api/v1/admin/circuit-breaker", staff))

    healthz = (("method", "GET"), ("route", "healthz"), ("status", "200"))
    # Each worker process keeps its own counts; the scrape sums them (multiprocess mode).
    assert samples[("memory_connector_http_requests_total", healthz)] == 20
    assert len(list(multiproc.glob("*.db"))) >= 1
    live = samples[("memory_connector_enrichment_workers_live", ())]
    assert live == len(status["worker"]["liveWorkers"]) == 1
    assert samples[("memory_connector_ai_budget_today_cents", ())] == float(breaker["budgetCents"])
    assert (
        samples[("memory_connector_enrichment_jobs", (("status", "pending"),))]
        == (status["queue"]["pending"])
    )

    # A job run outside gunicorn (`manage.py enrich --inline`, as a Celery worker would) records
    # its duration and its AI calls in the shared directory: web's scrape sums them too.
    user = make_user("metrics@example.com")
    memory_create(user=user, text_content="Dentist appointment on Monday", type="note")
    processes.manage(env, "enrich", "--inline")
    samples = scrape(port)
    completed = (
        "memory_connector_enrichment_job_duration_seconds_count",
        (("outcome", "completed"),),
    )
    assert samples[completed] == 1
    for operation in ("classification", "embedding"):
        labels = (("operation", operation), ("outcome", "settled"), ("provider", "openai"))
        assert samples[("memory_connector_ai_call_duration_seconds_count", labels)] == 1
