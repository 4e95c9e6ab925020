"""Per-user daily usage and limits: memories (429 on POST /memories), enrichments, cost, the
user's own overrides, the reset, and user_limit_reached once per day."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from common.clock import today
from common.errors import LimitExceededError
from common.testing import assert_error
from conftest import client_for
from costs import metering, usage
from costs.models import UserUsage
from costs.tests.helpers import count_enrichment, meter_flat
from memories.models import Memory

URL = "/api/v1/memories"
D = Decimal


def create(client, text="A thought"):
    return client.post(URL, {"textContent": text}, "json")


@pytest.mark.django_db
def test_post_memories_answers_429_at_the_limit_and_works_again_after_the_reset(user, settings):
    settings.USER_DAILY_MEMORY_LIMIT = 2
    settings.AI_BUDGET_TIMEZONE = "America/New_York"
    evening = dt.datetime(2031, 6, 1, 23, 0, tzinfo=dt.UTC)  # 19:00 in New York
    with time_machine.travel(evening, tick=False):
        api = client_for(user)
        assert create(api, "one").status_code == 201
        assert create(api, "two").status_code == 201
        response = create(api, "three")
        error = assert_error(response, 429, "limit_exceeded")
        # Midnight in New York (EDT, UTC-4) is 04:00 UTC: 5 hours away.
        assert response["Retry-After"] == str(5 * 3600)
        assert error["details"]["resetsAt"] == "2031-06-02T04:00:00Z"
        assert error["details"]["limit"] == 2
        assert error["details"]["retryAfterSeconds"] == 5 * 3600
        assert "2031-06-02T04:00:00Z" in error["message"]
        assert Memory.objects.count() == 2
        # A refused create counts nothing (it rolled back with the request).
        assert UserUsage.objects.get(user=user).memories_created == 2
    with time_machine.travel(dt.datetime(2031, 6, 2, 4, 0, 1, tzinfo=dt.UTC), tick=False):
        api = client_for(user)
        assert create(api, "three").status_code == 201
        assert UserUsage.objects.get(user=user, day=dt.date(2031, 6, 2)).memories_created == 1


@pytest.mark.django_db
def test_the_limit_is_per_user_and_a_users_override_wins(user, make_user, settings):
    settings.USER_DAILY_MEMORY_LIMIT = 1
    bob = make_user("bob@example.com", daily_memory_limit=3)
    carol = make_user("carol@example.com", daily_memory_limit=0)  # 0: no limit
    assert create(client_for(user)).status_code == 201
    assert create(client_for(user)).status_code == 429
    assert [create(client_for(bob)).status_code for _ in range(4)] == [201, 201, 201, 429]
    assert {create(client_for(carol)).status_code for _ in range(5)} == {201}


@pytest.mark.django_db
def test_an_idempotent_replay_does_not_count_again(api, user, settings):
    settings.USER_DAILY_MEMORY_LIMIT = 1
    first = api.post(URL, {"textContent": "x"}, "json", HTTP_IDEMPOTENCY_KEY="k1")
    replay = api.post(URL, {"textContent": "x"}, "json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert UserUsage.objects.get(user=user).memories_created == 1


@pytest.mark.django_db
def test_the_service_raises_limit_exceeded_with_retry_after(user, settings):
    settings.USER_DAILY_MEMORY_LIMIT = 1
    usage.usage_record_memory_created(user=user)
    with pytest.raises(LimitExceededError) as raised:
        usage.usage_record_memory_created(user=user.pk)
    assert int(raised.value.headers["Retry-After"]) >= 1
    assert raised.value.details["kind"] == "memories"


@pytest.mark.django_db
def test_the_enrichment_limit_and_the_users_override(user, settings):
    settings.USER_DAILY_ENRICHMENT_LIMIT = 2
    assert count_enrichment(user) is None
    assert count_enrichment(user) is None
    assert count_enrichment(user) == "user_enrichment_limit"
    user.daily_enrichment_limit = 3
    user.save()
    assert count_enrichment(user) is None
    assert count_enrichment(user) == "user_enrichment_limit"
    user.daily_enrichment_limit = 0
    user.save()
    for _ in range(5):
        assert count_enrichment(user) is None
    assert UserUsage.objects.get(user=user).enrichments == 8


@pytest.mark.django_db
def test_the_cost_limit(user, settings, flat_price):
    settings.USER_DAILY_COST_CENTS = D("5")
    settings.USER_DAILY_ENRICHMENT_LIMIT = 0
    meter_flat(4, user=user, estimate_tokens=5)  # reserved at 5, settled at 4 cents
    assert UserUsage.objects.get(user=user).cost_cents == D("4")
    meter_flat(1, user=user, operation="embedding")  # 5 of 5 cents
    with pytest.raises(metering.Refused) as refused:
        meter_flat(1, user=user)
    assert refused.value.reason == "user_cost_limit"
    assert UserUsage.objects.get(user=user).cost_cents == D("5")
    user.daily_cost_limit_cents = D("0")  # no limit for this user
    user.save()
    assert meter_flat(1, user=user).cost_cents == D("1")


@pytest.mark.django_db(transaction=True)
def test_user_limit_reached_is_sent_once_per_user_per_day_per_limit(
    user, make_user, settings, signal_log, flat_price
):
    settings.USER_DAILY_MEMORY_LIMIT = 1
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1
    settings.USER_DAILY_COST_CENTS = D("1")
    bob = make_user("bob@example.com")
    api = client_for(user)
    for _ in range(3):
        create(api)
    create(client_for(bob))
    for _ in range(3):
        count_enrichment(user)
    meter_flat(1, user=user, operation="embedding")
    with pytest.raises(metering.Refused):
        meter_flat(1, user=user, operation="embedding")
    reached = sorted(
        (c["user_id"], c["limit"], c["day"]) for c in signal_log.of("user_limit_reached")
    )
    assert reached == sorted(
        [
            (user.pk, "memories", today()),
            (user.pk, "enrichments", today()),
            (user.pk, "cost", today()),
            (bob.pk, "memories", today()),
        ]
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_pass_the_memory_limit(user, settings):
    assert connection.vendor == "postgresql"
    settings.USER_DAILY_MEMORY_LIMIT = 5
    workers = 16
    barrier = threading.Barrier(workers)

    def attempt(i):
        client = client_for(user)
        try:
            barrier.wait()
            return create(client, f"note {i}").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = list(pool.map(attempt, range(workers)))
    assert statuses.count(201) == 5
    assert statuses.count(429) == workers - 5
    assert Memory.objects.filter(user=user).count() == 5
    assert UserUsage.objects.get(user=user).memories_created == 5
