"""GET /metrics: the Prometheus text format, computed at scrape time from the selectors the staff
API reads (one source of truth). Labels are bounded: operations, providers, models, job statuses
and deferral reasons, never a user, a memory or a path."""

from __future__ import annotations

import datetime as dt
import hmac
import os
import time
from collections.abc import Iterator
from decimal import Decimal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.errors import error_response
from common.metrics import HTTP_LATENCY, HTTP_REQUESTS, PREFIX, REGISTRY
from costs.models import ProviderBreaker
from costs.selectors import BudgetSnapshot, budget_snapshot, cost_rows, provider_breaker_snapshot
from enrichment.selectors import queue_counts, worker_last_heartbeat, workers_live

LEDGER_LABELS = ["operation", "provider", "model"]
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


def _number(value: Decimal | int) -> float:
    """Prometheus samples are floats; cents keep their two places exactly enough for dashboards."""
    return float(value)


class AppCollector(Collector):
    """The application's gauges, read fresh from the database on every scrape."""

    def collect(self) -> Iterator[Metric]:
        budget = budget_snapshot()
        yield from self._budget(budget)
        yield from self._provider_breaker()
        yield from self._queue()
        yield from self._workers()
        yield from self._ledger(budget.day)

    def _gauge(self, name: str, doc: str, value: float | None = None, labels=None):
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value, labels=labels)

    def _budget(self, budget: BudgetSnapshot) -> Iterator[Metric]:
        yield self._gauge(
            "ai_spend_today_cents",
            "AI spend of the budget day, in cents.",
            _number(budget.spent_cents),
        )
        yield self._gauge(
            "ai_budget_today_cents",
            "The budget day's limit, in cents.",
            _number(budget.limit_cents),
        )
        yield self._gauge(
            "ai_reserved_cents", "Cents held by AI calls in flight.", _number(budget.reserved_cents)
        )
        yield self._gauge(
            "ai_operations_today", "AI calls settled on the budget day.", budget.operation_count
        )
        yield self._gauge(
            "budget_breaker_open",
            "1 when the budget breaker is open (paused or exhausted), else 0.",
            int(budget.is_open),
        )
        yield self._gauge(
            "budget_paused", "1 when staff paused AI calls, else 0.", int(budget.paused)
        )

    def _provider_breaker(self) -> Iterator[Metric]:
        breaker = provider_breaker_snapshot()
        state = self._gauge(
            "provider_breaker_state",
            "1 for the provider breaker's current state, 0 for the others.",
            labels=["state"],
        )
        for choice in ProviderBreaker.State.values:
            state.add_metric([choice], int(breaker["state"] == choice))
        yield state
        yield self._gauge(
            "provider_breaker_consecutive_failures",
            "Provider failures in a row counted by the breaker.",
            breaker["consecutiveFailures"],
        )

    def _queue(self) -> Iterator[Metric]:
        queue = queue_counts()
        jobs = self._gauge(
            "enrichment_jobs",
            "Enrichment jobs now: pending (every waiting job, "
            "deferred included), processing, deferred.",
            labels=["status"],
        )
        for status in ("pending", "processing", "deferred"):
            jobs.add_metric([status], queue[status])
        yield jobs
        finished = self._gauge(
            "enrichment_jobs_finished_today",
            "Enrichment jobs finished on the budget day, by outcome.",
            labels=["status"],
        )
        finished.add_metric(["completed"], queue["completedToday"])
        finished.add_metric(["failed"], queue["failedToday"])
        yield finished
        deferred = self._gauge(
            "enrichment_jobs_deferred", "Deferred enrichment jobs by reason.", labels=["reason"]
        )
        for reason, row in sorted(queue["deferredByReason"].items()):
            deferred.add_metric([reason], row["count"])
        yield deferred

    def _workers(self) -> Iterator[Metric]:
        yield self._gauge(
            "enrichment_workers_live", "Workers with a recent heartbeat.", len(workers_live())
        )
        last = worker_last_heartbeat()
        if last is not None:
            yield self._gauge(
                "enrichment_worker_last_heartbeat_age_seconds",
                "Seconds since the newest worker heartbeat.",
                (timezone.now() - last).total_seconds(),
            )

    def _ledger(self, day: dt.date) -> Iterator[Metric]:
        rows = cost_rows(start=day, end=day)
        calls = self._gauge(
            "ai_calls_today", "AI calls of the budget day (daily roll-ups).", labels=LEDGER_LABELS
        )
        tokens = self._gauge(
            "ai_tokens_today",
            "Tokens of the budget day by kind (input, cached, output).",
            labels=[*LEDGER_LABELS, "kind"],
        )
        cost = self._gauge(
            "ai_cost_today_cents", "AI cost of the budget day, in cents.", labels=LEDGER_LABELS
        )
        for row in rows:
            key = [row["operation"], row["provider"], row["model"]]
            calls.add_metric(key, row["count"])
            cost.add_metric(key, _number(row["totalCents"]))
            for kind in ("input", "cached", "output"):
                tokens.add_metric([*key, kind], row[f"{kind}Tokens"])
        yield from (calls, tokens, cost)


def request_route(request: HttpRequest) -> str:
    """The URL pattern that answered (e.g. "api/v1/memories/<uuid:memory_id>"), not the path."""
    match = getattr(request, "resolver_match", None)
    return (match.route or match.view_name or UNMATCHED_ROUTE) if match else UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Counts every request and its latency, labelled by route template, method and status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = request_route(request)
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
        return response


def metrics_registry() -> CollectorRegistry:
    """The database gauges and the event metrics (requests, jobs, AI calls, alerts): every
    process's (multiprocess mode) or this process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Events())
    return registry


class _Events(Collector):
    """This process's counters and histograms (common/metrics.py)."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.METRICS_TOKEN.encode()
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        if not settings.METRICS_OPEN_WITHOUT_TOKEN:
            # Production without a token: not served at all (README "Monitoring with Prometheus").
            return error_response(404, "not_found", "Not found.")
    elif not _authorized(request):
        response = error_response(
            401, "not_authenticated", "A valid 'Authorization: Bearer <METRICS_TOKEN>' is required."
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
