"""The event metrics (common/metrics.py) move where things happen: a real enrichment job through
job_process (local provider, and the real `openai` client against the stub), an AI call through
the metering door, an alert over real SMTP; read back from GET /metrics with prometheus_client's
parser."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from alerting.models import Alert
from alerting.services import alert_deliver, alert_send
from alerting.tests import conftest as alerting_fixtures
from enrichment import services
from enrichment.models import EnrichmentJob
from memories.services import memory_create
from memoryconnector.tests import test_metrics

pytestmark = pytest.mark.django_db

# Fixtures of the apps' own tests: the metrics token, SMTP and no channel configured by the
# developer's .env (the OpenAI stub's are the suite's own).
_token = test_metrics._token
_no_channels_configured = alerting_fixtures._no_channels_configured
smtp = alerting_fixtures.smtp
smtp_down = alerting_fixtures.smtp_down


class Scrapes:
    """Two scrapes around an action: how much a sample grew."""

    def __init__(self, anon):
        self.anon = anon
        self.before = test_metrics.scrape(anon)

    def grown(self, name: str, **labels: str) -> float:
        after = test_metrics.scrape(self.anon)
        key = (f"memory_connector_{name}", tuple(sorted(labels.items())))
        return after.get(key, 0) - self.before.get(key, 0)


def run_new_job(user) -> str:
    memory = memory_create(user=user, text_content="Dentist appointment on Monday", type="note")
    job = EnrichmentJob.objects.get(memory=memory)
    return services.job_process(job_id=job.pk, worker="test")


def test_it_times_a_completed_job_and_its_ai_calls(anon, user):
    scrapes = Scrapes(anon)
    assert run_new_job(user) == "completed"
    assert scrapes.grown("enrichment_job_duration_seconds_count", outcome="completed") == 1
    assert scrapes.grown("enrichment_job_duration_seconds_bucket", outcome="completed", le="+Inf")
    for operation in ("classification", "embedding"):
        labels = {"operation": operation, "provider": "local", "outcome": "settled"}
        assert scrapes.grown("ai_call_duration_seconds_count", **labels) == 1
    assert scrapes.grown("enrichment_retries_total", kind="error") == 0


def test_it_counts_a_rate_limit_and_an_error_retry(anon, user, use_openai):
    use_openai.script(["429", "500"])
    scrapes = Scrapes(anon)
    assert run_new_job(user) == "deferred"
    job = EnrichmentJob.objects.get()
    with time_machine_after(job.not_before):
        assert services.job_process(job_id=job.pk, worker="test") == "retrying"
    assert scrapes.grown("enrichment_retries_total", kind="rate_limited") == 1
    assert scrapes.grown("enrichment_retries_total", kind="error") == 1
    assert scrapes.grown("enrichment_job_duration_seconds_count", outcome="deferred") == 1
    assert scrapes.grown("enrichment_job_duration_seconds_count", outcome="retrying") == 1
    classification = {"operation": "classification", "provider": "openai"}
    # A rate limit is no judgement on the provider; a 500 is an outage.
    assert scrapes.grown("ai_call_duration_seconds_count", **classification, outcome="no_judgement")
    assert scrapes.grown("ai_call_duration_seconds_count", **classification, outcome="outage")


def time_machine_after(moment: dt.datetime):
    """Just past `moment` (instead of sleeping until then)."""
    return time_machine.travel(moment + dt.timedelta(seconds=1), tick=False)


def budget_alert(key: str) -> Alert:
    return alert_send(
        kind="budget_threshold",
        severity="warning",
        dedup_key=key,
        title="AI budget 50% used",
        message="Half of today's AI budget is spent.",
    )


def test_it_counts_alerts_sent_by_channel_and_severity(anon, smtp):
    scrapes = Scrapes(anon)
    assert alert_deliver(alert_id=budget_alert("budget:metrics:50").pk) == "delivered"
    assert len(smtp.messages) == 1
    assert scrapes.grown("alerts_sent_total", channel="email", severity="warning") == 1
    assert scrapes.grown("alerts_sent_total", channel="log", severity="warning") == 1
    assert scrapes.grown("alert_deliveries_failed_total", channel="email") == 0


def test_it_counts_failed_deliveries_by_channel(anon, smtp_down):
    scrapes = Scrapes(anon)
    alert = budget_alert("budget:metrics:80")
    assert alert_deliver(alert_id=alert.pk) == "retry"
    assert scrapes.grown("alert_deliveries_failed_total", channel="email") == 1
    assert scrapes.grown("alerts_sent_total", channel="email", severity="warning") == 0
    assert Alert.objects.get(pk=alert.pk).next_attempt_at > timezone.now()
