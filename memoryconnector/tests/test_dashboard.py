"""The staff dashboard with Django's test client: who may see it, CSRF on every button, each
button calling its service, the numbers equal to the staff API's, the warnings, and a fixed
number of queries however many rows there are (also for every big changelist)."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from common.clock import next_reset
from conftest import client_for
from costs import breaker, budget
from enrichment.models import EnrichmentJob, JobStatus
from memoryconnector.dashboard import cost_chart, duration_text, spend_level

from .staff_ui import assert_queue_on_page, jobs, seed_rows, spend, worker_alive

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
LIVE = "/admin/dashboard/live/"
BUTTONS = {
    "trigger": "/admin/dashboard/trigger/",
    "pause": "/admin/dashboard/pause/",
    "resume": "/admin/dashboard/resume/",
    "retry_failed": "/admin/dashboard/retry-failed/",
}


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def superuser_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


def metric(page: str, name: str) -> str:
    """The text of the element with data-metric="name" (a number as the API sends it)."""
    match = re.search(rf'data-metric="{re.escape(name)}"[^>]*>([^<]*)<', page)
    assert match, f"no data-metric={name} on the page"
    return match.group(1).strip()


# --- who may see it -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [DASHBOARD, LIVE])
def test_it_sends_anonymous_visitors_to_the_admin_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={url}"


@pytest.mark.parametrize("url", [DASHBOARD, LIVE])
def test_it_sends_a_logged_in_non_staff_user_to_the_admin_login(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [DASHBOARD, LIVE])
def test_it_shows_staff_the_dashboard(staff_client, url):
    response = staff_client.get(url)
    assert response.status_code == 200
    assert b'id="mc-spend"' in response.content
    assert response["Cache-Control"].startswith("max-age=0")


def test_the_live_fragment_holds_every_live_section_of_the_page(staff_client):
    page = staff_client.get(DASHBOARD).content.decode()
    live = staff_client.get(LIVE).content.decode()
    sections = re.findall(r'<section id="([^"]+)"[^>]*data-live', page)
    assert len(sections) >= 8
    assert re.findall(r'<section id="([^"]+)"[^>]*data-live', live) == sections
    assert "<html" not in live  # a fragment, not a page


@pytest.mark.parametrize("name", list(BUTTONS))
def test_no_button_works_for_anonymous_or_non_staff_users(client, user, name):
    assert client.post(BUTTONS[name])["Location"].startswith("/admin/login/")
    client.force_login(user)
    assert client.post(BUTTONS[name])["Location"].startswith("/admin/login/")
    assert budget.budget_breaker_state() == "closed"


@pytest.mark.parametrize("name", list(BUTTONS))
def test_a_button_is_post_only(staff_client, name):
    assert staff_client.get(BUTTONS[name]).status_code == 405


def test_the_admin_index_links_to_the_dashboard_under_our_brand(superuser_client):
    page = superuser_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in page
    assert "Memory Connector" in page and "Django administration" not in page


# --- CSRF on every button -------------------------------------------------------------------------


@pytest.fixture
def csrf_client(staff) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def _token(client: Client) -> str:
    page = client.get(DASHBOARD).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


@pytest.mark.parametrize("name", list(BUTTONS))
def test_a_button_without_the_csrf_token_is_refused(csrf_client, name):
    if name == "resume":
        budget.budget_pause()
    before = budget.budget_breaker_state()

    response = csrf_client.post(BUTTONS[name])

    assert response.status_code == 403
    assert budget.budget_breaker_state() == before


@pytest.mark.parametrize("name", list(BUTTONS))
def test_a_button_with_the_csrf_token_works(csrf_client, name):
    response = csrf_client.post(BUTTONS[name], {"csrfmiddlewaretoken": _token(csrf_client)})
    assert response.status_code == 302
    assert response["Location"] == DASHBOARD


# --- each button calls its service ----------------------------------------------------------------


def test_pause_opens_the_breaker_and_resume_closes_it(staff_client):
    page = staff_client.post(BUTTONS["pause"], follow=True).content.decode()
    assert budget.budget_breaker_state() == "open"
    assert "AI paused until resumed or the daily reset." in page
    assert metric(page, "circuitBreaker.state") == "open"
    assert 'id="btn-resume"' in page and 'id="btn-pause"' not in page
    assert 'data-warning="ai_paused"' in page

    page = staff_client.post(BUTTONS["resume"], follow=True).content.decode()
    assert budget.budget_breaker_state() == "closed"
    assert "AI resumed." in page
    assert metric(page, "circuitBreaker.state") == "closed"


def test_pause_twice_says_it_was_already_paused(staff_client):
    staff_client.post(BUTTONS["pause"])
    page = staff_client.post(BUTTONS["pause"], follow=True).content.decode()
    assert "AI was already paused." in page


def test_trigger_runs_the_sweep_and_dispatches_due_jobs(staff_client, user, monkeypatch):
    from enrichment import services

    jobs(user, pending=2)
    sent = []
    monkeypatch.setattr(
        services, "jobs_dispatch", lambda *, job_ids: sent.extend(job_ids) or len(job_ids)
    )

    page = staff_client.post(BUTTONS["trigger"], follow=True).content.decode()

    assert len(sent) == 2
    assert "Enrichment triggered: 2 job(s) dispatched." in page
    assert EnrichmentJob.objects.filter(dispatched_at__isnull=False).count() == 2


def test_retry_failed_queues_every_failed_job_again(staff_client, user):
    jobs(user, failed=3)

    page = staff_client.post(BUTTONS["retry_failed"], follow=True).content.decode()

    assert "3 failed job(s) queued again." in page
    assert EnrichmentJob.objects.filter(status=JobStatus.PENDING).count() == 3
    page = staff_client.post(BUTTONS["retry_failed"], follow=True).content.decode()
    assert "No failed job to retry." in page


# --- the numbers are the API's --------------------------------------------------------------------


def test_the_numbers_on_the_page_equal_the_staff_api(staff_client, staff, user):
    spend(user, 5)
    jobs(user, pending=3, processing=1, deferred=2, completed=4, failed=1)
    worker_alive()
    api = client_for(staff)
    costs = api.get("/api/v1/admin/ai-cost-tracking").json()
    breaker = api.get("/api/v1/admin/circuit-breaker").json()
    pipeline = api.get("/api/v1/admin/enrichment-worker").json()

    page = staff_client.get(DASHBOARD).content.decode()

    for key in ("totalCents", "budgetCents", "reservedCents"):
        assert Decimal(metric(page, f"dailySpend.{key}")) == Decimal(
            str(costs["dailySpend"][key])
        ), key
    assert Decimal(metric(page, "dailySpend.percentUsed")) == Decimal(
        str(costs["dailySpend"]["percentUsed"])
    )
    assert int(metric(page, "dailySpend.operationCount")) == costs["dailySpend"]["operationCount"]
    assert costs["dailySpend"]["operationCount"] == 5
    for row in costs["todayCostsByOperation"]:
        prefix = f"todayCostsByOperation.{row['operation']}"
        assert int(metric(page, f"{prefix}.count")) == row["count"]
        assert Decimal(metric(page, f"{prefix}.totalCents")) == Decimal(str(row["totalCents"]))
    assert metric(page, "circuitBreaker.state") == breaker["state"]
    assert_queue_on_page(lambda name: metric(page, name), pipeline["queue"])
    assert pipeline["queue"] == {
        "pending": 5,  # every job waiting: 3 due now and 2 deferred
        "processing": 1,
        "deferred": 2,
        "deferredByReason": {
            "budget_exhausted": {
                "count": 2,
                "until": next_reset().isoformat().replace("+00:00", "Z"),
            }
        },
        "completedToday": 4,
        "failedToday": 1,
    }
    assert "the daily budget is spent (its rest cannot cover a call)" in page
    assert int(metric(page, "worker.liveWorkers.length")) == len(pipeline["worker"]["liveWorkers"])
    assert "worker-1@test" in page


def test_the_spend_bar_changes_colour_at_50_75_and_100_percent():
    assert [spend_level(Decimal(p)) for p in ("0", "49.99", "50", "74.99", "75", "99.99")] == [
        "level-0",
        "level-0",
        "level-50",
        "level-50",
        "level-75",
        "level-75",
    ]
    assert spend_level(Decimal("100")) == spend_level(Decimal("250")) == "level-100"


def test_the_page_shows_the_bar_at_the_spent_share(staff_client, user, settings):
    settings.AI_DAILY_BUDGET_CENTS = Decimal("0.1")
    spend(user, 1)  # about 0.0636 ¢ of 0.1 ¢
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'class="mc-bar level-50"' in page
    assert re.search(r'class="mc-bar-fill" style="width: 6\d\.\d\d%"', page)


def test_it_warns_in_plain_words(staff_client, settings):
    settings.AI_PROVIDER = "local"
    settings.SMTP_HOST = settings.ADMIN_EMAIL = ""
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = ""
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'data-warning="local_provider"' in page
    assert 'data-warning="no_alert_channel"' in page
    assert "No alert channel is configured: alerts reach only the log." in page
    assert "set SMTP_HOST and ADMIN_EMAIL" in page
    assert 'data-warning="no_worker"' in page and "No worker is alive" in page
    assert 'data-warning="ai_paused"' not in page


def test_it_says_all_clear_when_nothing_needs_attention(staff_client, settings):
    settings.AI_PROVIDER = "openai"
    settings.SLACK_WEBHOOK_URL = "https://hooks.example.invalid/T000"
    worker_alive()
    page = staff_client.get(DASHBOARD).content.decode()
    assert "data-warning=" not in page
    assert "All clear" in page


def test_a_spent_budget_is_a_warning_with_the_time_to_reset(staff_client, user, settings):
    # Exactly one call: 4000 input and 60 output tokens at gpt-4o-mini.
    settings.AI_DAILY_BUDGET_CENTS = Decimal("0.0636")
    spend(user, 1)
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'data-warning="budget_spent"' in page
    assert "Today's AI budget is spent" in html.unescape(page)
    assert metric(page, "circuitBreaker.state") == "open"
    assert "AI is stopped: budget spent" in page
    assert 'id="budget-breaker-since"' in page and "budget spent" in page


def test_the_open_provider_breaker_is_shown_with_since_when(staff_client, settings):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 2
    breaker.provider_breaker_record_failure()
    breaker.provider_breaker_record_failure()
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'data-warning="provider_breaker_open"' in page
    assert re.search(r'id="provider-breaker-state">open<', page)
    assert "2 failures in a row" in page


def test_the_30_day_chart_is_inline_svg_with_a_bar_per_day(staff_client, user):
    spend(user, 2)
    page = staff_client.get(DASHBOARD).content.decode()
    start = page.index('<svg class="mc-chart"')
    svg = page[start : page.index("</svg>", start)]
    assert svg.count('<rect class="mc-chart-bar') == 30
    assert "today" in svg
    # Offline: no script, style or font from another host.
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page)


def test_the_chart_scales_to_the_busiest_day():
    days = [
        {
            "day": dt.date(2026, 11, d),
            "budgetCents": Decimal(200),
            "totalCents": Decimal(c),
            "operationCount": 1,
        }
        for d, c in ((26, "0"), (27, "40"), (28, "100"))
    ]
    chart = cost_chart(days)
    heights = [bar["height"] for bar in chart["bars"]]
    assert heights[0] == 0 and heights[2] > heights[1] > 0
    assert chart["grid"][-1]["label"] == "$1.00"
    assert chart["budget_line"] is None  # $2.00 is above the $1.00 scale
    assert [bar["level"] for bar in chart["bars"]] == ["level-none", "level-0", "level-50"]


def test_durations_read_like_a_person_wrote_them():
    assert duration_text(42) == "42 s"
    assert duration_text(12 * 60 + 5) == "12 min"
    assert duration_text(5 * 3600 + 12 * 60) == "5 h 12 min"


def test_the_page_refreshes_itself_with_a_script_kept_in_the_repository(staff_client, settings):
    settings.ENRICHMENT_POLL_INTERVAL_MS = 1234
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'data-interval-ms="1234"' in page
    assert 'data-live-url="/admin/dashboard/live/"' in page
    assert re.search(r'<script src="/static/dashboard/dashboard.js" defer>', page)
    assert finders.find("dashboard/dashboard.js") and finders.find("dashboard/dashboard.css")


# --- a fixed number of queries --------------------------------------------------------------------

PAGES = [
    DASHBOARD,
    LIVE,
    "/admin/memories/memory/",
    "/admin/enrichment/enrichmentjob/",
    "/admin/costs/aicostrecord/",
    "/admin/alerting/alert/",
    "/admin/costs/userusage/",
    "/admin/accounts/user/",
    "/admin/memories/embedding/",
    "/admin/memories/idempotencykey/",
    "/admin/enrichment/workerheartbeat/",
    "/admin/costs/dailybudget/",
]


@pytest.mark.parametrize("url", PAGES)
def test_a_page_runs_as_many_queries_for_50_rows_as_for_5(
    superuser_client, url, django_assert_num_queries
):
    worker_alive()
    seed_rows(5)
    superuser_client.get(url)  # warm caches that live for the whole process
    with CaptureQueriesContext(connection) as few:
        assert superuser_client.get(url).status_code == 200
    seed_rows(45)
    with django_assert_num_queries(len(few)):
        response = superuser_client.get(url)
    assert response.status_code == 200
