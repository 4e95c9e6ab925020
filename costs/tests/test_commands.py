"""manage.py budget and costs_report."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from common.clock import today
from costs import breaker, budget, selectors
from costs.models import AICostRecord
from costs.tests.helpers import reserve
from costs.tests.helpers import spend_flat as spend

pytestmark = pytest.mark.django_db

D = Decimal


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def budget_200(settings):
    settings.AI_DAILY_BUDGET_CENTS = D("200")
    settings.AI_BUDGET_TIMEZONE = "Europe/Paris"


def test_budget_shows_the_state(flat_price, budget_200):
    spend(50)
    out = run("budget")
    assert f"Budget day   {today()} (Europe/Paris)" in out
    assert "Breaker      closed" in out
    assert "Limit        200.000000 cents (AI_DAILY_BUDGET_CENTS)" in out
    assert "Spent        50.000000 cents (25.00 %)" in out
    assert "Reserved     0.000000 cents" in out
    assert "Operations   1" in out
    assert "Provider     closed, 0 consecutive failure(s)" in out


def test_budget_sets_pauses_and_resumes(flat_price, budget_200):
    spend(150)
    out = run("budget", "--set-today", "100")
    assert "Today's budget set to 100 cents." in out
    assert "Breaker      open" in out and "(set by staff)" in out
    assert budget.budget_breaker_state() == "open"
    out = run("budget", "--reset-today")
    assert "Limit        200.000000 cents (AI_DAILY_BUDGET_CENTS)" in out
    out = run("budget", "--pause")
    assert "Breaker      open (paused by staff)" in out
    assert reserve(D(1)) is None
    out = run("budget", "--resume")
    assert out.startswith("AI resumed.") and "Breaker      closed" in out
    assert run("budget", "--resume").startswith("AI was not paused.")


def test_budget_closes_the_provider_breaker(budget_200):
    for _ in range(5):
        breaker.provider_breaker_record_failure()
    assert "Provider     open, 5 consecutive" in run("budget")
    assert "Provider     closed, 0" in run("budget", "--close-provider-breaker")


@pytest.mark.parametrize("value", ["-1", "abc", "NaN"])
def test_budget_refuses_a_bad_amount(value, budget_200):
    with pytest.raises(CommandError):
        run("budget", "--set-today", value)


def test_costs_report_by_operation_model_and_user(flat_price, budget_200, make_user):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    spend(10, operation="embedding", user=alice)
    spend(5, operation="classification", user=bob)
    spend(1, operation="classification", user=bob)
    AICostRecord.objects.create(
        operation="embedding",
        provider="openai",
        model="text-embedding-3-small",
        input_tokens=500,
        cost_cents=D("0.001"),
        day=today() - dt.timedelta(days=3),
    )
    out = run("costs_report", "--days", "7")
    lines = out.splitlines()
    assert lines[0].startswith(f"AI costs {today() - dt.timedelta(days=6)} .. {today()} (7 day(s)")
    assert lines[0].endswith("by operation")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:] if not line.startswith("-")}
    assert rows["embedding"] == ["2", "510", "10.001000", "0.100010"]
    assert rows["classification"] == ["2", "6", "6.000000", "0.060000"]
    assert rows["total"] == ["4", "516", "16.001000", "0.160010"]
    # the most expensive first
    assert lines.index(next(x for x in lines if x.startswith("embedding"))) < lines.index(
        next(x for x in lines if x.startswith("classification"))
    )

    by_model = run("costs_report", "--days", "2", "--by", "model")
    assert "test/flat" in by_model and "text-embedding-3-small" not in by_model

    by_user = run("costs_report", "--by", "user")
    assert "alice@example.com" in by_user and "bob@example.com" in by_user
    assert "(user None)" in by_user  # the row without a user

    assert "day" in run("costs_report", "--by", "day").splitlines()[1]


def test_costs_report_agrees_with_the_api_selectors(flat_price, budget_200):
    spend(7)
    spend(3, operation="embedding")
    report = run("costs_report", "--days", "1")
    total = selectors.costs_daily(days=1)["totalCents"]
    assert f"{total}" in report.splitlines()[-1]


def test_costs_report_with_no_costs(budget_200):
    out = run("costs_report")
    assert out.splitlines()[-1].split() == ["total", "0", "0", "0.000000", "0.000000"]
