"""The event metrics every app records where things happen: counters and histograms, defined once
here. This module imports only prometheus_client, so any app (alerting included, which imports no
other app of ours) can record into it without an import cycle. memoryconnector/metrics.py serves
them on GET /metrics with the scrape-time gauges.

With PROMETHEUS_MULTIPROC_DIR set before start-up, prometheus_client keeps each process's values in
files there and a scrape sums every process's: gunicorn's workers and, through a directory the
containers share, the Celery worker's (jobs, AI calls, alerts are recorded there). Labels are
bounded: routes, methods, statuses, outcomes, operations, providers, channels, severities — never a
user, a memory or a path."""

from __future__ import annotations

import os
import socket

from prometheus_client import CollectorRegistry, Counter, Histogram, values

PREFIX = "memory_connector"
# Seconds: from a fast local call to a provider that takes its time.
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Web, worker and beat containers share one directory (compose's `metrics` volume), and
    # each container numbers its processes from 1: the host name keeps their files apart.
    values.ValueClass = values.MultiProcessValue(
        process_identifier=lambda: f"{socket.gethostname()}-{os.getpid()}"
    )

# This process's event metrics (outside multiprocess mode, the registry /metrics reads).
REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    registry=REGISTRY,
)
ENRICHMENT_JOB_DURATION = Histogram(
    f"{PREFIX}_enrichment_job_duration_seconds",
    "Time of one claimed enrichment run, by outcome (completed, deferred, retrying, failed, "
    "superseded, cancelled, lost_claim, error).",
    ["outcome"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
ENRICHMENT_RETRIES = Counter(
    f"{PREFIX}_enrichment_retries",
    "Enrichment runs put back to wait by a provider error, by kind (rate_limited, error).",
    ["kind"],
    registry=REGISTRY,
)
AI_CALL_DURATION = Histogram(
    f"{PREFIX}_ai_call_duration_seconds",
    "Time of one metered AI call, from the reservation to its settlement, failure or release, "
    "by operation, provider and outcome (settled, outage, no_judgement, released).",
    ["operation", "provider", "outcome"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
ALERTS_SENT = Counter(
    f"{PREFIX}_alerts_sent",
    "Alerts a channel accepted, by channel and severity.",
    ["channel", "severity"],
    registry=REGISTRY,
)
ALERT_DELIVERIES_FAILED = Counter(
    f"{PREFIX}_alert_deliveries_failed",
    "Alert delivery attempts a channel failed, by channel.",
    ["channel"],
    registry=REGISTRY,
)
