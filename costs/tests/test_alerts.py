"""Alerts raised by the costs app (costs.alerts): budget thresholds once per day and threshold,
users' daily limits once per user, limit and day, and the provider breaker at the moment it
opens and closes. Email through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from alerting.models import Alert, AlertStatus, DeliveryStatus
from alerting.tests import conftest as alerting_fixtures
from common.errors import LimitExceededError
from common.testing import run_in_threads
from costs import breaker, budget, metering, signals, usage
from costs.apps import _connect_alerts
from costs.tests.helpers import count_enrichment, reserve, settle_flat, spend_flat

pytestmark = pytest.mark.django_db

# The alerting tests' fixtures: no channel configured unless a test starts one (autouse), a real
# SMTP server on 127.0.0.1 with SMTP_* pointing at it, Celery tasks run eagerly.
_no_channels_configured = alerting_fixtures._no_channels_configured
smtp = alerting_fixtures.smtp
eager_celery = alerting_fixtures.eager_celery

D = Decimal
DAY = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def limit(settings):
    settings.AI_DAILY_BUDGET_CENTS = D("10")
    settings.AI_BUDGET_ALERT_THRESHOLDS = [50, 75, 100]
    return D("10")


@pytest.fixture
def spend(django_capture_on_commit_callbacks):
    """Reserve and settle `cents` at 1 cent per token (flat_price), running what waits for the
    commit (the costs signal, then the alert's delivery) as a real commit would."""

    def spend(cents: int, *, estimate: int | None = None, user=None):
        with django_capture_on_commit_callbacks(execute=True):
            return spend_flat(cents, estimate=None if estimate is None else D(estimate), user=user)

    return spend


def budget_alerts() -> list[Alert]:
    return list(Alert.objects.filter(kind="budget_threshold").order_by("id"))


def keys(alerts) -> list[str]:
    return [alert.dedup_key for alert in alerts]


# --- budget thresholds --------------------------------------------------------------------------


def test_each_threshold_fires_once_per_day_and_again_the_next_day(flat_price, limit, spend):
    with time_machine.travel(DAY, tick=False):
        spend(5)  # 50 %
        spend(1)  # 60 %: 50 % was already raised today
        assert keys(budget_alerts()) == ["budget:2026-11-28:50"]
        spend(2)  # 80 %
        spend(1)  # 90 %
    with time_machine.travel(DAY + dt.timedelta(days=1), tick=False):
        spend(6)  # a new budget day: 60 %
    assert keys(budget_alerts()) == [
        "budget:2026-11-28:50",
        "budget:2026-11-28:75",
        "budget:2026-11-29:50",
    ]
    first = budget_alerts()[0]
    assert first.severity == "warning"
    assert first.title == "AI budget 50% used"
    assert first.context["spentCents"] == "5.000000"
    assert first.context["limitCents"] == "10.000000"
    assert first.context["percentUsed"] == "50.00"
    assert first.context["thresholdPercent"] == 50
    assert first.context["day"] == "2026-11-28"
    assert "5.00¢ of 10.00¢ (50.00 %)" in first.message


def test_one_settlement_from_under_50_to_over_100_raises_all_three_in_order(
    flat_price, limit, spend
):
    with time_machine.travel(DAY, tick=False):
        spend(4)  # 40 %
        assert budget_alerts() == []
        spend(7, estimate=1)  # estimated 1 ¢, really 7 ¢: 40 % -> 110 % at once
    alerts = budget_alerts()
    assert keys(alerts) == ["budget:2026-11-28:50", "budget:2026-11-28:75", "budget:2026-11-28:100"]
    assert [a.severity for a in alerts] == ["warning", "warning", "critical"]
    created = [a.created_at for a in alerts]
    assert created == sorted(created)
    breaker = alerts[-1]
    assert breaker.title == "AI budget 100% used: the budget breaker is open"
    assert breaker.context["percentUsed"] == "110.00"
    assert "AI calls are stopped" in breaker.message
    assert breaker.context["resetsAt"] == "2026-11-29T00:00:00Z"


def test_close_thresholds_keep_keys_of_their_own(flat_price, settings, spend):
    """85 % and 95 % are two alerts, never one collapsing into the other."""
    settings.AI_DAILY_BUDGET_CENTS = D("100")
    settings.AI_BUDGET_ALERT_THRESHOLDS = [85, 95]
    with time_machine.travel(DAY, tick=False):
        spend(86)
        spend(10)
    assert keys(budget_alerts()) == ["budget:2026-11-28:85", "budget:2026-11-28:95"]
    assert [a.severity for a in budget_alerts()] == ["warning", "warning"]


def test_the_receivers_are_connected_once(flat_price, limit, spend):
    _connect_alerts()  # as a second ready() would
    with time_machine.travel(DAY, tick=False):
        spend(10)
    assert len(budget_alerts()) == 3
    ours = [
        receiver
        for receiver in signals.budget_threshold_crossed.receivers
        if receiver[0][0] == "costs.alerts.budget_threshold"
    ]
    assert len(ours) == 1


# --- the "Done means" of issue 5: half the budget spent -> one email ---------------------------


@pytest.mark.django_db(transaction=True)
def test_spending_half_the_budget_sends_one_email_and_records_it(settings, smtp, eager_celery):
    settings.AI_DAILY_BUDGET_CENTS = D("200")
    settings.AI_BUDGET_ALERT_THRESHOLDS = [50, 75, 100]

    def call(*, operation: str, model: str, input_tokens: int, output_tokens: int = 0):
        held = budget.budget_reserve(
            estimate_cents=D("30"), user_id=None, memory_id=None, operation=operation,
            provider="openai", model=model, input_tokens=0, output_tokens=0,
        )  # fmt: skip
        return budget.budget_settle(
            reservation=held, model=model, input_tokens=input_tokens, output_tokens=output_tokens
        ).record

    with time_machine.travel(DAY, tick=False):
        # text-embedding-3-small at $0.02 / 1M tokens: 80 ¢, 40 % of the budget.
        embedding = call(
            operation="embedding", model="text-embedding-3-small", input_tokens=40_000_000
        )
        assert embedding.cost_cents == D("80.000000")
        assert smtp.messages == []
        # gpt-4o-mini at $0.15 in / $0.60 out per 1M tokens: 15 ¢ + 6 ¢ -> 101 ¢, 50.5 %.
        classification = call(
            operation="classification",
            model="gpt-4o-mini",
            input_tokens=1_000_000,
            output_tokens=100_000,
        )
        assert classification.cost_cents == D("21.000000")

    assert len(smtp.messages) == 1
    mail_from, rcpt_tos, message = smtp.messages[0]
    assert mail_from == "alerts@mc.example.com"
    assert rcpt_tos == ["ops@example.com", "cto@example.com"]
    assert message["Subject"] == "[Memory Connector] WARNING: AI budget 50% used"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "101.00¢ of 200.00¢ (50.50 %)" in text
    assert "https://mc.example.com/admin/dashboard/" in text
    assert message.get_body(preferencelist=("html",)) is not None
    alert = Alert.objects.get()
    assert alert.dedup_key == "budget:2026-11-28:50"
    assert alert.status == AlertStatus.DELIVERED and alert.delivered_at is not None
    assert [(d.channel, d.status) for d in alert.deliveries.all()] == [
        ("email", DeliveryStatus.OK),
        ("log", DeliveryStatus.OK),
    ]


# --- many workers at once (PostgreSQL) ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_8_threads_settling_across_the_thresholds_raise_each_alert_once(
    flat_price, settings, smtp, eager_celery
):
    settings.AI_DAILY_BUDGET_CENTS = D("8")
    settings.AI_BUDGET_ALERT_THRESHOLDS = [50, 75, 100]

    def settle_one_cent(index: int):
        reservation = reserve(D("1"))
        return settle_flat(reservation, tokens=1)

    with time_machine.travel(DAY, tick=True):
        run_in_threads(8, settle_one_cent)

    alerts = budget_alerts()
    assert keys(alerts) == ["budget:2026-11-28:50", "budget:2026-11-28:75", "budget:2026-11-28:100"]
    assert len(smtp.messages) == 3
    assert sorted(m["Subject"] for _, _, m in smtp.messages) == [
        "[Memory Connector] CRITICAL: AI budget 100% used: the budget breaker is open",
        "[Memory Connector] WARNING: AI budget 50% used",
        "[Memory Connector] WARNING: AI budget 75% used",
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_8_processes_announcing_the_same_threshold_raise_one_alert(smtp, eager_celery):
    def announce(index: int):
        signals.budget_threshold_crossed.send(
            sender=None,
            day=DAY.date(),
            percent=75,
            spent_cents=D("150"),
            limit_cents=D("200"),
        )

    run_in_threads(8, announce)

    assert keys(budget_alerts()) == ["budget:2026-11-28:75"]
    assert len(smtp.messages) == 1


# --- users' daily limits ------------------------------------------------------------------------


def user_alerts() -> list[Alert]:
    return list(Alert.objects.filter(kind="user_limit_reached").order_by("id"))


def test_a_user_reaching_the_memory_limit_gets_one_info_alert_per_day(
    settings, make_user, django_capture_on_commit_callbacks
):
    settings.USER_DAILY_MEMORY_LIMIT = 2
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")

    def create(user) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            usage.usage_record_memory_created(user=user)

    with time_machine.travel(DAY, tick=False):
        create(alice)
        assert user_alerts() == []
        create(alice)  # the limit is reached
        for _ in range(3):
            with pytest.raises(LimitExceededError):
                create(alice)
        create(bob)
        create(bob)
    with time_machine.travel(DAY + dt.timedelta(days=1), tick=False):
        create(alice)
        create(alice)

    alerts = user_alerts()
    assert keys(alerts) == [
        f"user-limit:{alice.pk}:memories:2026-11-28",
        f"user-limit:{bob.pk}:memories:2026-11-28",
        f"user-limit:{alice.pk}:memories:2026-11-29",
    ]
    first = alerts[0]
    assert first.severity == "info"
    assert first.title == "alice@example.com reached the daily memories limit"
    assert first.message.startswith("alice@example.com created 2 memories today")
    assert first.context == {
        "userId": alice.pk,
        "email": "alice@example.com",
        "limit": "memories",
        "limitValue": 2,
        "day": "2026-11-28",
        "resetsAt": "2026-11-29T00:00:00Z",
    }


def test_the_enrichment_and_cost_limits_alert_once_each(
    settings, make_user, flat_price, spend, django_capture_on_commit_callbacks
):
    settings.AI_DAILY_BUDGET_CENTS = D("1000")
    settings.USER_DAILY_ENRICHMENT_LIMIT = 1
    settings.USER_DAILY_COST_CENTS = D("3")
    alice = make_user("alice@example.com", daily_cost_limit_cents=D("2.5"))

    with time_machine.travel(DAY, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert count_enrichment(alice) is None
        with django_capture_on_commit_callbacks(execute=True):
            assert count_enrichment(alice) == "user_enrichment_limit"
        spend(2, user=alice)
        spend(1, user=alice)  # 3 ¢: over her own 2.5 ¢ limit
        with pytest.raises(metering.Refused):
            spend(1, user=alice)  # refused, and not announced again

    alerts = user_alerts()
    assert keys(alerts) == [
        f"user-limit:{alice.pk}:enrichments:2026-11-28",
        f"user-limit:{alice.pk}:cost:2026-11-28",
    ]
    cost = alerts[1]
    assert cost.context["limitValue"] == "2.500000"
    assert "alice@example.com used 2.50¢ of AI today" in cost.message


# --- the provider breaker, at the moment it changes ---------------------------------------------


def test_the_provider_breaker_alerts_when_it_opens_and_recovers_when_it_closes(
    settings, django_capture_on_commit_callbacks
):
    settings.AI_PROVIDER_FAILURE_THRESHOLD = 2
    settings.AI_PROVIDER_COOLDOWN_SECONDS = 60

    def step(action) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            action()

    def breaker_alerts() -> list[tuple[str, str, str]]:
        rows = Alert.objects.filter(kind__startswith="provider_breaker").order_by("id")
        return [(a.kind, a.severity, a.dedup_key) for a in rows]

    with time_machine.travel(DAY, tick=False) as clock:
        step(breaker.provider_breaker_record_failure)
        assert breaker_alerts() == []
        step(breaker.provider_breaker_record_failure)  # opens
        opened = [("provider_breaker_open", "critical", "provider-breaker-open:1")]
        assert breaker_alerts() == opened
        # Probe cycles (half open -> open again) are the same opening: no new alert.
        for _ in range(2):
            clock.shift(61)
            step(lambda: breaker.provider_breaker_allow())
            step(breaker.provider_breaker_record_failure)
        assert breaker_alerts() == opened
        clock.shift(61)
        step(lambda: breaker.provider_breaker_allow())
        step(breaker.provider_breaker_record_success)  # closes
        recovered = (
            "provider_breaker_open_recovered",
            "info",
            "provider-breaker-open:1:recovered",
        )
        assert breaker_alerts() == [*opened, recovered]
        # A new opening is a new alert.
        step(breaker.provider_breaker_record_failure)
        step(breaker.provider_breaker_record_failure)
    assert breaker_alerts() == [
        *opened,
        recovered,
        ("provider_breaker_open", "critical", "provider-breaker-open:2"),
    ]
    first = Alert.objects.get(dedup_key="provider-breaker-open:1")
    assert first.title == "AI provider breaker open"
    assert first.context["consecutiveFailures"] == 2 and first.context["incident"] == 1
    recovery = Alert.objects.get(dedup_key="provider-breaker-open:1:recovered")
    assert recovery.title == "Recovered: AI provider breaker open"
    assert recovery.context["minutes"] == 3
