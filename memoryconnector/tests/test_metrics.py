"""GET /metrics: the Prometheus text format, guarded by METRICS_TOKEN, its figures equal to the
staff API's (the same selectors), parsed with prometheus_client's own parser."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.testing import assert_error
from costs import budget
from enrichment.models import WorkerHeartbeat
from memories.models import Memory
from memoryconnector.tests.staff_ui import jobs, spend, worker_alive

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token"  # noqa: S105


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture(autouse=True)
def _only_this_tests_workers(monkeypatch):
    """Only the heartbeats a test writes count (the session's in-process worker also beats)."""
    monkeypatch.setattr("enrichment.services.heartbeat_beat", lambda **kwargs: None)
    WorkerHeartbeat.objects.all().delete()


def scrape(anon) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = anon.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(f"memory_connector_{name}", tuple(sorted(labels.items())))]


def summed(samples: dict, name: str, *, operation: str, kinds: tuple = ()) -> float:
    """The sum of `name` over the labels of `operation` (and of token `kinds`, when given)."""
    return sum(
        v
        for (sample, labels), v in samples.items()
        if sample == f"memory_connector_{name}"
        and ("operation", operation) in labels
        and (not kinds or dict(labels)["kind"] in kinds)
    )


def test_it_refuses_a_scrape_without_the_bearer_token(anon):
    assert_error(anon.get("/metrics"), 401, "not_authenticated")
    wrong = anon.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
    assert_error(wrong, 401, "not_authenticated")
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_it_is_not_served_without_a_token_unless_settings_open_it(anon, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_OPEN_WITHOUT_TOKEN = False  # production
    assert_error(anon.get("/metrics"), 404, "not_found")
    settings.METRICS_OPEN_WITHOUT_TOKEN = True  # local
    assert anon.get("/metrics").status_code == 200


def test_it_reports_the_staff_apis_figures(anon, staff_api, user):
    spend(user, 3)
    held = budget.budget_reserve(
        estimate_cents=Decimal("1.25"), user_id=user.pk, memory_id=None,
        operation="classification", provider="openai", model="gpt-4o-mini",
        input_tokens=0, output_tokens=0,
    )  # fmt: skip
    assert not isinstance(held, str)
    jobs(user, pending=2, processing=1, deferred=3, completed=4, failed=5)
    worker_alive()
    budget.budget_pause()

    samples = scrape(anon)
    breaker = staff_api.get("/api/v1/admin/circuit-breaker").json()
    tracking = staff_api.get("/api/v1/admin/ai-cost-tracking").json()
    queue = staff_api.get("/api/v1/admin/enrichment-worker").json()["queue"]
    worker = staff_api.get("/api/v1/admin/enrichment-worker").json()["worker"]

    assert value(samples, "ai_spend_today_cents") == float(breaker["dailySpendCents"]) > 0
    assert value(samples, "ai_budget_today_cents") == float(breaker["budgetCents"])
    assert value(samples, "ai_reserved_cents") == float(breaker["reservedCents"]) == 1.25
    assert value(samples, "ai_operations_today") == breaker["operationCount"] == 3
    assert value(samples, "budget_breaker_open") == 1 and breaker["state"] == "open"
    assert value(samples, "budget_paused") == 1 and breaker["paused"] is True
    provider_state = breaker["providerBreaker"]["state"]
    assert value(samples, "provider_breaker_state", state=provider_state) == 1
    assert value(samples, "provider_breaker_state", state="open") == int(provider_state == "open")

    for status in ("pending", "processing", "deferred"):
        assert value(samples, "enrichment_jobs", status=status) == queue[status]
    assert value(samples, "enrichment_jobs", status="pending") == 5  # deferred ones wait too
    assert value(samples, "enrichment_jobs_finished_today", status="completed") == 4
    assert value(samples, "enrichment_jobs_finished_today", status="failed") == 5
    assert queue["completedToday"] == 4 and queue["failedToday"] == 5
    reason = queue["deferredByReason"]["budget_exhausted"]["count"]
    assert value(samples, "enrichment_jobs_deferred", reason="budget_exhausted") == reason == 3
    assert value(samples, "enrichment_workers_live") == len(worker["liveWorkers"]) == 1
    assert value(samples, "enrichment_worker_last_heartbeat_age_seconds") >= 0

    by_operation = {row["operation"]: row for row in tracking["todayCostsByOperation"]}
    assert set(by_operation) == {"classification", "embedding"}
    for operation, row in by_operation.items():
        calls = summed(samples, "ai_calls_today", operation=operation)
        cost = summed(samples, "ai_cost_today_cents", operation=operation)
        tokens = summed(samples, "ai_tokens_today", operation=operation, kinds=("input", "output"))
        assert calls == row["count"]
        assert cost == pytest.approx(float(row["totalCents"]))
        assert tokens == row["totalTokens"]


def test_it_keeps_label_values_bounded(anon, user):
    spend(user, 2)
    jobs(user, deferred=2)
    allowed = {"operation", "provider", "model", "kind", "status", "state", "reason"}
    allowed |= {"route", "method", "le"}  # the request metrics
    allowed |= {"outcome", "channel", "severity"}  # jobs, AI calls, alerts (common/metrics.py)
    for _name, labels in scrape(anon):
        assert {key for key, _ in labels} <= allowed
        assert all(str(user.pk) != v and "@" not in v for _, v in labels)


def test_it_counts_requests_by_route_template_never_by_raw_path(anon, api, user):
    memory = Memory.objects.create(user=user, text_content="Dentist on Monday")
    before = scrape(anon)
    assert api.get(f"/api/v1/memories/{memory.pk}").status_code == 200
    assert anon.get("/no/such/page").status_code == 404
    after = scrape(anon)

    def grown(name: str, **labels: str) -> float:
        key = (f"memory_connector_{name}", tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    routes = {dict(labels).get("route") for (_name, labels) in after}
    route = "api/v1/memories/<uuid:memory_id>"
    assert route in routes
    assert str(memory.pk) not in "".join(r for r in routes if r)
    assert grown("http_requests_total", route=route, method="GET", status="200") == 1
    assert grown("http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grown("http_request_duration_seconds_count", route=route, method="GET") == 1
