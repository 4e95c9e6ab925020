"""The cost ledger's changelist on a big table: the total of what is filtered, a capped count,
a date drill-down and filter choices that never scan the whole ledger."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from common.admin import CappedCountPaginator
from common.clock import today
from costs.models import AICostRecord, DailyBudget
from memoryconnector.tests.staff_ui import seed_rows, spend

pytestmark = pytest.mark.django_db

LEDGER = "/admin/costs/aicostrecord/"


@pytest.fixture
def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


def test_it_shows_the_total_of_what_is_filtered(admin_client):
    seed_rows(4)  # two classifications, two embeddings, 0.0125 ¢ each

    everything = admin_client.get(LEDGER).content.decode()
    embeddings = admin_client.get(LEDGER, {"operation__exact": "embedding"}).content.decode()

    assert "Total of these 4 calls:" in everything and "(0.05 ¢)" in everything
    assert "Total of these 2 calls:" in embeddings and "(0.025 ¢)" in embeddings


def test_the_total_of_a_day_equals_the_days_budget_spend(admin_client, user):
    spend(user, 3)
    day = today()
    page = admin_client.get(
        LEDGER, {"day__year": day.year, "day__month": day.month, "day__day": day.day}
    ).content.decode()
    spent = DailyBudget.objects.get(day=day).spent_cents
    assert f"({format(spent.normalize(), 'f')} ¢)" in page


def test_it_stops_counting_at_the_cap(admin_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    seed_rows(5)

    response = admin_client.get(LEDGER)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 3
    assert "more than 3 AI cost records" in " ".join(response.content.decode().split())
    assert "Total of these 5 calls" in response.content.decode()  # the total is exact


def test_the_date_drill_down_lists_the_budget_days(admin_client):
    old = today() - dt.timedelta(days=400)
    DailyBudget.objects.create(day=today(), limit_cents=Decimal(200))
    DailyBudget.objects.create(day=old, limit_cents=Decimal(200))

    years = admin_client.get(LEDGER).context["budget_days"]
    year = admin_client.get(LEDGER, {"day__year": old.year}).context["budget_days"]

    assert [c["title"] for c in years["choices"]] == sorted({str(old.year), str(today().year)})
    assert len(year["choices"]) == 1 and year["back"]["title"] == "All dates"


def test_the_model_and_provider_filters_offer_priced_and_recent_values(admin_client):
    AICostRecord.objects.create(
        operation="classification", provider="acme", model="acme-large", day=today()
    )
    page = admin_client.get(LEDGER).content.decode()
    for value in ("gpt-4o-mini", "text-embedding-3-small", "acme-large", "?provider=acme"):
        assert value in page
    filtered = admin_client.get(LEDGER, {"model": "acme-large"})
    assert [r.model for r in filtered.context["cl"].result_list] == ["acme-large"]


def test_the_filters_and_drill_down_never_scan_the_ledger_for_distinct_values(admin_client):
    seed_rows(3)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(LEDGER)
    sql = [q["sql"] for q in queries]
    # Never a DISTINCT over the ledger: recent values come from the daily roll-ups.
    assert not [q for q in sql if "DISTINCT" in q and "ai_cost_tracking" in q]
    assert [q for q in sql if "DISTINCT" in q and "ai_cost_daily" in q and '"day" >=' in q]


def test_search_finds_a_users_calls_by_exact_email(admin_client):
    seed_rows(3)
    email = AICostRecord.objects.select_related("user").first().user.email

    response = admin_client.get(LEDGER, {"q": email.upper()})

    assert [r.user.email for r in response.context["cl"].result_list] == [email]
    assert list(admin_client.get(LEDGER, {"q": email[:5]}).context["cl"].result_list) == []
