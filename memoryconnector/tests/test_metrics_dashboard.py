"""The Grafana dashboard (deploy/grafana/memory-connector.json) queries only metric names that
GET /metrics exposes: a renamed or removed metric fails here, not on an operator's empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from memoryconnector.tests import test_metrics

pytestmark = pytest.mark.django_db

DASHBOARD = Path(settings.BASE_DIR) / "deploy" / "grafana" / "memory-connector.json"
METRIC_NAME = re.compile(r"\bmemory_connector_[A-Za-z0-9_:]+")
# The series a family of each type exposes (a labelled counter or histogram has no samples until
# first recorded, but its family is announced from the start).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}

_token = test_metrics._token


def exposed_names(anon) -> set[str]:
    response = anon.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {test_metrics.TOKEN}")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.content.decode()):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_it_queries_only_metrics_that_metrics_exposes(anon):
    exposed = exposed_names(anon)
    queries = panel_queries()
    assert queries  # the dashboard has panels with queries
    unknown = {
        (title, name)
        for title, expr in queries
        for name in METRIC_NAME.findall(expr)
        if name not in exposed
    }
    assert unknown == set()
    used = {name for _title, expr in queries for name in METRIC_NAME.findall(expr)}
    for event in ("enrichment_job_duration_seconds_bucket", "ai_call_duration_seconds_bucket"):
        assert f"memory_connector_{event}" in used
