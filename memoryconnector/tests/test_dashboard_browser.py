"""The dashboard in a real browser: headless Chromium from Debian (`apt-get install chromium`)
driven by Playwright against Django's live server. Log in through the admin's login form, read
the numbers, press the buttons, watch the page refresh itself, and keep a screenshot in
test-results/dashboard.png. Skipped, with the reason, where /usr/bin/chromium is missing."""

from __future__ import annotations

import re
from decimal import Decimal

from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import expect

from conftest import PASSWORD, client_for
from costs import budget

from .browser import BROWSER_MARKS, RESULTS
from .staff_ui import assert_queue_on_page, jobs, spend, worker_alive

pytestmark = BROWSER_MARKS


def log_in(page, live_server, email: str, next_url: str = "/admin/dashboard/") -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state("domcontentloaded")


def metric(page, name: str) -> str:
    return page.locator(f'[data-metric="{name}"]').first.text_content().strip()


def test_staff_log_in_and_see_the_numbers_of_the_staff_api(page, live_server, make_user, settings):
    settings.AI_DAILY_BUDGET_CENTS = Decimal("0.4")  # the seeded calls spend about 54 %
    staff = make_user("staff@example.com", staff=True)
    user = make_user("alice@example.com")
    spend(user, 6)
    jobs(user, pending=4, processing=1, deferred=2, completed=7, failed=2)
    worker_alive()
    api = client_for(staff)
    costs = api.get("/api/v1/admin/ai-cost-tracking").json()
    pipeline = api.get("/api/v1/admin/enrichment-worker").json()

    log_in(page, live_server, staff.email)

    assert page.url == f"{live_server.url}/admin/dashboard/"
    assert page.title() == "Dashboard | Memory Connector"
    spent = costs["dailySpend"]
    assert Decimal(metric(page, "dailySpend.totalCents")) == Decimal(str(spent["totalCents"]))
    assert Decimal(metric(page, "dailySpend.budgetCents")) == Decimal(str(spent["budgetCents"]))
    assert Decimal(metric(page, "dailySpend.percentUsed")) == Decimal(str(spent["percentUsed"]))
    assert int(metric(page, "dailySpend.operationCount")) == spent["operationCount"] == 6
    assert_queue_on_page(lambda name: metric(page, name), pipeline["queue"])
    assert pipeline["queue"]["pending"] == 6 and pipeline["queue"]["failedToday"] == 2
    assert pipeline["queue"]["deferredByReason"]["budget_exhausted"]["count"] == 2
    assert page.locator('#deferred-by-reason tr[data-reason="budget_exhausted"]').is_visible()
    assert "level-50" in page.locator(".mc-bar").get_attribute("class")
    assert page.locator(".mc-chart .mc-chart-bar").count() == 30
    assert page.locator('[data-warning="local_provider"]').is_visible()

    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "dashboard.png"), full_page=True)
    assert page.js_errors == []


def test_pause_ai_changes_the_breaker_on_the_page(page, live_server, make_user):
    staff = make_user("staff@example.com", staff=True)
    log_in(page, live_server, staff.email)
    state = page.locator("#budget-breaker-state")
    assert state.text_content().strip() == "closed"

    page.click("#btn-pause")
    page.wait_for_load_state("domcontentloaded")

    assert state.text_content().strip() == "open"
    assert page.locator("#ai-state").text_content().strip() == "AI is paused"
    assert (
        "AI paused until resumed or the daily reset." in page.locator(".messagelist").inner_text()
    )
    assert budget.budget_breaker_state() == "open"

    page.click("#btn-resume")
    page.wait_for_load_state("domcontentloaded")
    assert state.text_content().strip() == "closed"
    assert page.js_errors == []


def test_the_page_refreshes_itself_without_a_reload(page, live_server, make_user, settings):
    settings.ENRICHMENT_POLL_INTERVAL_MS = 500
    staff = make_user("staff@example.com", staff=True)
    user = make_user("alice@example.com")
    log_in(page, live_server, staff.email)
    page.evaluate("window.__sameDocument = true")
    assert metric(page, "queue.pending") == "0"

    jobs(user, pending=3)
    budget.budget_pause()  # as if another staff member, or the API, paused AI

    # Playwright's own waiting (not page-evaluated strings, which the page's CSP forbids).
    expect(page.locator('[data-metric="queue.pending"]')).to_have_text("3")
    expect(page.locator("#budget-breaker-state")).to_have_text("open")
    assert page.evaluate("window.__sameDocument") is True  # no full reload happened
    assert page.locator("#btn-resume").is_visible()
    assert re.match(r"Updated \d\d:\d\d:\d\d UTC", page.locator("#mc-refresh-text").inner_text())
    assert page.js_errors == []


def test_a_non_staff_user_is_sent_to_the_login_page(page, live_server, make_user):
    user = make_user("alice@example.com")

    # The admin login form refuses a non-staff account.
    log_in(page, live_server, user.email)
    assert "/admin/login/" in page.url
    assert "staff account" in page.locator(".errornote").inner_text()

    # A session of a non-staff user (logged in elsewhere) is sent to the login page too.
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.goto(f"{live_server.url}/admin/dashboard/")
    assert page.url == f"{live_server.url}/admin/login/?next=/admin/dashboard/"
    assert page.locator("#id_username").is_visible()
    assert page.locator("#mc-dashboard").count() == 0
