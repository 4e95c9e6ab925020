"""The admin site: price table editable, ledger read-only, budget actions through the services."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from common.clock import today
from costs import breaker, budget, usage
from costs.models import AICostRecord, DailyBudget, ModelPrice, ProviderBreaker, UserUsage
from costs.tests.helpers import reserve, settle_flat

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


@pytest.fixture
def some_data(flat_price, settings, user):
    settings.AI_DAILY_BUDGET_CENTS = D("100")
    reservation = reserve(D(5), user=user)
    settle_flat(reservation, tokens=5, user=user, operation="embedding")
    usage.usage_record_memory_created(user=user)
    breaker.provider_breaker_record_failure()


@pytest.mark.parametrize(
    "model", ["modelprice", "aicostrecord", "dailybudget", "budgetreservation", "userusage"]
)
def test_every_changelist_renders(admin_client, some_data, model):
    response = admin_client.get(reverse(f"admin:costs_{model}_changelist"))
    assert response.status_code == 200


def test_the_provider_breaker_changelist_renders(admin_client, some_data):
    assert admin_client.get(reverse("admin:costs_providerbreaker_changelist")).status_code == 200


def test_the_ledger_is_read_only_and_never_counts_every_row(admin_client, some_data):
    from costs.admin import AICostRecordAdmin

    record = AICostRecord.objects.get()
    assert admin_client.get(reverse("admin:costs_aicostrecord_add")).status_code == 403
    page = admin_client.get(reverse("admin:costs_aicostrecord_change", args=[record.pk]))
    assert page.status_code == 200 and b'name="cost_cents"' not in page.content
    assert AICostRecordAdmin.show_full_result_count is False
    assert AICostRecordAdmin.date_hierarchy == "day"


def test_a_price_is_editable(admin_client):
    price = ModelPrice.objects.get(provider="openai", model="gpt-4o-mini")
    url = reverse("admin:costs_modelprice_change", args=[price.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(
        reverse("admin:costs_modelprice_add"),
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "effective_from_0": "2032-01-01",
            "effective_from_1": "00:00:00",
            "note": "price rise",
            "input_cents_per_1m": "20",
            "cached_input_cents_per_1m": "10",
            "output_cents_per_1m": "80",
            "batch_input_cents_per_1m": "",
            "batch_output_cents_per_1m": "",
        },
    )
    assert response.status_code == 302, response.content
    assert ModelPrice.objects.filter(model="gpt-4o-mini").count() == 2


def test_todays_limit_is_changed_through_the_service(admin_client, some_data):
    row = DailyBudget.objects.get(day=today())
    url = reverse("admin:costs_dailybudget_change", args=[row.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"limit_cents": "4.5"})
    assert response.status_code == 302, response.content
    row.refresh_from_db()
    assert row.limit_overridden and row.limit_cents == D("4.5")
    assert budget.budget_breaker_state() == "open"


def test_a_past_day_cannot_be_changed(admin_client, some_data):
    old = DailyBudget.objects.create(day=today() - dt.timedelta(days=3), limit_cents=D(7))
    url = reverse("admin:costs_dailybudget_change", args=[old.pk])
    admin_client.post(url, {"limit_cents": "99"})
    old.refresh_from_db()
    assert old.limit_cents == D(7)


def test_pause_and_resume_actions(admin_client, some_data):
    url = reverse("admin:costs_dailybudget_changelist")
    row = DailyBudget.objects.get(day=today())
    admin_client.post(url, {"action": "pause_today", "_selected_action": [row.pk]})
    assert budget.budget_breaker_state() == "open"
    admin_client.post(url, {"action": "resume_today", "_selected_action": [row.pk]})
    assert budget.budget_breaker_state() == "closed"


def test_close_the_provider_breaker_action(admin_client, some_data, settings):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 1
    breaker.provider_breaker_record_failure()
    row = ProviderBreaker.objects.get()
    assert row.state == "open"
    admin_client.post(
        reverse("admin:costs_providerbreaker_changelist"),
        {"action": "close_breaker", "_selected_action": [row.pk]},
    )
    row.refresh_from_db()
    assert row.state == "closed"


def test_user_limits_are_editable_on_the_user(admin_client, user):
    page = admin_client.get(reverse("admin:accounts_user_change", args=[user.pk]))
    assert page.status_code == 200
    for field in (b"daily_memory_limit", b"daily_enrichment_limit", b"daily_cost_limit_cents"):
        assert field in page.content
    assert UserUsage.objects.count() == 0
