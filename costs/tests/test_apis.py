"""The cost admin API: staff only, reference field names, money as JSON numbers, staff actions,
the daily history as JSON and CSV, and query counts that do not grow with the ledger."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.clock import today
from common.testing import assert_error
from conftest import client_for
from costs import breaker
from costs.models import AICostRecord, DailyBudget
from costs.tests.helpers import reserve
from costs.tests.helpers import spend_flat as spend
from memories.models import Memory

pytestmark = pytest.mark.django_db

D = Decimal
ADMIN_ENDPOINTS = [
    ("get", "/api/v1/admin/ai-cost-tracking"),
    ("get", "/api/v1/admin/circuit-breaker"),
    ("post", "/api/v1/admin/circuit-breaker/pause"),
    ("post", "/api/v1/admin/circuit-breaker/resume"),
    ("put", "/api/v1/admin/budget/today"),
    ("get", "/api/v1/admin/costs/daily"),
    ("get", "/api/v1/admin/costs/daily?format=csv"),
]


def call(client, method, url, data=None):
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, data if data is not None else {}, "json")


@pytest.fixture
def budget_200(settings):
    settings.AI_DAILY_BUDGET_CENTS = D("200")


@pytest.mark.parametrize(("method", "url"), ADMIN_ENDPOINTS)
def test_every_admin_endpoint_is_401_anonymous_and_403_for_non_staff(anon, api, method, url):
    assert_error(call(anon, method, url), 401, "not_authenticated")
    assert_error(call(api, method, url), 403, "permission_denied")
    assert not DailyBudget.objects.filter(paused=True).exists()


def test_ai_cost_tracking_has_the_reference_shape(staff_api, user, flat_price, budget_200):
    memory = Memory.objects.create(user=user, text_content="x")
    spend(tokens=100, operation="embedding", user=user, memory=memory)
    spend(tokens=25, operation="embedding", user=user)
    record = spend(tokens=1, operation="classification", user=user)
    response = staff_api.get("/api/v1/admin/ai-cost-tracking")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"dailySpend", "todayCostsByOperation", "recentOperations", "timestamp"}
    daily = body["dailySpend"]
    assert {"totalCents", "percentUsed", "operationCount", "circuitState"} <= set(daily)
    assert daily["totalCents"] == 126.0 and daily["percentUsed"] == 63.0
    assert daily["operationCount"] == 3 and daily["circuitState"] == "closed"
    assert daily["budgetCents"] == 200
    by_operation = {row["operation"]: row for row in body["todayCostsByOperation"]}
    assert by_operation["embedding"] == {
        "operation": "embedding",
        "count": 2,
        "totalTokens": 125,
        "totalCents": 125.0,
    }
    assert by_operation["classification"]["count"] == 1
    recent = body["recentOperations"]
    assert [r["id"] for r in recent] == [
        record.pk,
        *AICostRecord.objects.exclude(pk=record.pk).order_by("-id").values_list("pk", flat=True),
    ]
    first = recent[-1]
    assert {
        "id",
        "operation",
        "provider",
        "model",
        "tokens",
        "costCents",
        "userId",
        "memoryId",
        "createdAt",
    } <= set(first)
    assert first["memoryId"] == str(memory.pk) and first["userId"] == user.pk
    assert first["costCents"] == 100 and first["tokens"] == 100


def test_money_is_a_json_number_rounded_to_six_places(staff_api, budget_200):
    ModelPrice = AICostRecord._meta.apps.get_model("costs", "ModelPrice")
    ModelPrice.objects.create(
        provider="test",
        model="micro",
        input_cents_per_1m=D(1),
        effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    spend(tokens=1_234_567, model="micro", estimate=D(2))  # 1.234567 ¢
    raw = staff_api.get("/api/v1/admin/ai-cost-tracking").content.decode()
    assert '"totalCents":1.234567' in raw.replace(" ", "")
    assert json.loads(raw)["recentOperations"][0]["costCents"] == 1.234567


def test_only_the_latest_50_operations_are_listed(staff_api, flat_price, budget_200):
    for _ in range(55):
        spend(tokens=1)
    body = staff_api.get("/api/v1/admin/ai-cost-tracking").json()
    assert len(body["recentOperations"]) == 50
    assert body["dailySpend"]["operationCount"] == 55


def test_circuit_breaker_reports_both_breakers(staff_api, flat_price, budget_200, settings):
    settings.AI_BUDGET_TIMEZONE = "Asia/Kolkata"  # UTC+5:30
    spend(tokens=150)
    body = staff_api.get("/api/v1/admin/circuit-breaker").json()
    assert {"state", "dailySpendCents", "percentUsed", "operationCount", "timestamp"} <= set(body)
    assert body["state"] == "closed"
    assert body["dailySpendCents"] == 150 and body["percentUsed"] == 75
    assert body["budgetCents"] == 200 and body["operationCount"] == 1
    assert body["remainingCents"] == 50 and body["reservedCents"] == 0
    assert body["resetsAt"].endswith("Z") and body["timezone"] == "Asia/Kolkata"
    assert body["resetsAt"][11:19] == "18:30:00"  # midnight in India, in UTC
    assert body["day"] == today().isoformat()
    provider = body["providerBreaker"]
    assert (provider["state"], provider["consecutiveFailures"]) == ("closed", 0)
    for _ in range(5):
        breaker.provider_breaker_record_failure()
    provider = staff_api.get("/api/v1/admin/circuit-breaker").json()["providerBreaker"]
    assert provider["state"] == "open" and provider["consecutiveFailures"] == 5
    assert provider["since"]


def test_staff_pause_and_resume(staff_api, budget_200):
    paused = staff_api.post("/api/v1/admin/circuit-breaker/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "open" and paused.json()["paused"] is True
    assert reserve(D(1)) is None
    resumed = staff_api.post("/api/v1/admin/circuit-breaker/resume")
    assert resumed.json()["state"] == "closed" and resumed.json()["paused"] is False
    assert reserve(D(1)) is not None


def test_staff_set_todays_budget(staff_api, flat_price, budget_200):
    spend(tokens=200)
    assert staff_api.get("/api/v1/admin/circuit-breaker").json()["state"] == "open"
    response = staff_api.put("/api/v1/admin/budget/today", {"limitCents": 500.25}, "json")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "closed" and body["budgetCents"] == 500.25
    assert body["budgetOverridden"] is True and body["percentUsed"] == 39.98
    back = staff_api.put("/api/v1/admin/budget/today", {"limitCents": None}, "json").json()
    assert back["budgetCents"] == 200 and back["budgetOverridden"] is False
    assert back["state"] == "open"
    assert (
        staff_api.put("/api/v1/admin/budget/today", {"limitCents": "300"}, "json").json()[
            "budgetCents"
        ]
        == 300
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "limitCents"),
        ({"limitCents": -1}, "limitCents"),
        ({"limitCents": "lots"}, "limitCents"),
        ({"limitCents": True}, "limitCents"),
        ({"limitCents": 1, "limit": 2}, "limit"),
        ({"limitCents": 1.1234567}, "limitCents"),
    ],
)
def test_bad_budgets_are_400(staff_api, payload, field):
    error = assert_error(
        staff_api.put("/api/v1/admin/budget/today", payload, "json"), 400, "validation_error"
    )
    assert field in error["details"]


def test_costs_daily_lists_every_day_by_operation_and_model(staff, flat_price, budget_200):
    now = dt.datetime.now(dt.UTC)
    with time_machine.travel(now + dt.timedelta(days=1), tick=False):
        client = client_for(None)
        client.force_authenticate(staff)
        spend(tokens=10, operation="embedding")
        spend(tokens=5, operation="classification")
        # Not in the price table: the fallback price, 2 tokens at 250 ¢ / 1M.
        spend(tokens=2, operation="classification", model="other")
        record = AICostRecord.objects.create(
            operation="embedding",
            provider="openai",
            model="text-embedding-3-small",
            input_tokens=1000,
            cost_cents=D("0.002"),
            day=today() - dt.timedelta(days=2),
        )
        response = client.get("/api/v1/admin/costs/daily?days=7")
        assert response.status_code == 200
        body = response.json()
        assert body["days"] == 7 and len(body["daily"]) == 7
        assert body["endDay"] == today().isoformat()
        assert [d["day"] for d in body["daily"]] == sorted(d["day"] for d in body["daily"])
        last = body["daily"][-1]
        assert last["totalCents"] == 15.0005 and last["operationCount"] == 3
        assert last["budgetCents"] == 200
        assert last["byOperation"] == [
            {"operation": "classification", "count": 2, "totalTokens": 7, "totalCents": 5.0005},
            {"operation": "embedding", "count": 1, "totalTokens": 10, "totalCents": 10.0},
        ]
        assert {(m["model"], m["totalCents"]) for m in last["byModel"]} == {
            ("flat", 15.0),
            ("other", 0.0005),
        }
        older = next(d for d in body["daily"] if d["day"] == record.day.isoformat())
        assert older["totalCents"] == 0.002 and older["budgetCents"] is None
        assert body["totalCents"] == 15.0025 and body["operationCount"] == 4


def test_costs_daily_as_csv(staff_api, flat_price, budget_200):
    spend(tokens=10, operation="embedding")
    spend(tokens=4, operation="embedding")
    response = staff_api.get("/api/v1/admin/costs/daily?days=3&format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert lines[0] == (
        "day,operation,provider,model,count,input_tokens,cached_tokens,output_tokens,"
        "total_tokens,total_cents"
    )
    assert lines[1:] == [f"{today().isoformat()},embedding,test,flat,2,14,0,0,14,14.000000"]


@pytest.mark.parametrize("query", ["days=0", "days=367", "days=x", "format=xml"])
def test_bad_daily_queries_are_json_errors(staff_api, query):
    response = staff_api.get(f"/api/v1/admin/costs/daily?{query}")
    assert response.status_code in (400, 404)
    assert_error(response, response.status_code)


def test_a_csv_request_with_bad_input_still_gets_a_json_error(staff_api, anon):
    assert_error(staff_api.get("/api/v1/admin/costs/daily?days=0&format=csv"), 400)
    assert_error(anon.get("/api/v1/admin/costs/daily?format=csv"), 401)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/admin/ai-cost-tracking",
        "/api/v1/admin/circuit-breaker",
        "/api/v1/admin/costs/daily?days=30",
        "/api/v1/admin/costs/daily?days=30&format=csv",
    ],
)
def test_query_counts_do_not_grow_with_the_ledger(staff_api, staff, flat_price, budget_200, url):
    def count() -> int:
        client = client_for(staff)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    spend(tokens=1)
    few = count()
    users = [staff]
    for i in range(60):
        spend(tokens=1, operation="embedding" if i % 2 else "classification", user=users[0])
        AICostRecord.objects.create(
            operation="embedding",
            provider="openai",
            model=f"m{i % 4}",
            cost_cents=D("0.1"),
            day=today() - dt.timedelta(days=i % 20),
            memory_id=None,
        )
    assert count() == few


def test_the_memory_id_may_be_missing(staff_api, flat_price, budget_200):
    spend(tokens=1, memory=None)
    assert (
        staff_api.get("/api/v1/admin/ai-cost-tracking").json()["recentOperations"][0]["memoryId"]
        is None
    )


def test_the_enrichment_pipeline_can_read_the_same_numbers(flat_price, budget_200):
    from costs import selectors

    spend(tokens=3)
    spend(tokens=4)
    data = selectors.ai_cost_tracking()
    assert data["dailySpend"]["totalCents"] == D("7") and data["dailySpend"]["operationCount"] == 2


def test_client_for_other_users_is_403(make_user):
    assert_error(client_for(make_user("eve@example.com")).get("/api/v1/admin/circuit-breaker"), 403)
