"""Fixtures for the costs tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from costs import signals
from costs.models import ModelPrice
from costs.prices import prices_load

EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _prices(request):
    """The seeded price table (a transactional test's flush would otherwise leave it empty)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and not {"db", "transactional_db"} & set(request.fixturenames):
        return
    request.getfixturevalue("db")
    prices_load()


@pytest.fixture(autouse=True)
def _fresh_estimates():
    """Each test starts without the output percentiles cached by the one before."""
    from costs import metering

    metering.output_estimates_forget()
    yield
    metering.output_estimates_forget()


@pytest.fixture
def limit(settings):
    """A day's budget large enough for any test call (1,000 US dollars)."""
    settings.AI_DAILY_BUDGET_CENTS = Decimal("100000")


@pytest.fixture
def flat_price(db):
    """provider "test", model "flat": 1 cent per input token, 0.5 per cached, 2 per output."""
    return ModelPrice.objects.create(
        provider="test",
        model="flat",
        input_cents_per_1m=Decimal(1_000_000),
        cached_input_cents_per_1m=Decimal(500_000),
        output_cents_per_1m=Decimal(2_000_000),
        effective_from=EPOCH,
    )


class SignalLog:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self._receivers = []

    def connect(self):
        for name in (
            "budget_threshold_crossed",
            "user_limit_reached",
            "budget_breaker_changed",
            "provider_breaker_changed",
        ):

            def receiver(sender, signal=None, _name=name, **kwargs):
                self.calls.append((_name, kwargs))

            getattr(signals, name).connect(receiver, weak=False)
            self._receivers.append((getattr(signals, name), receiver))

    def disconnect(self):
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def of(self, name: str) -> list[dict]:
        return [kwargs for signal, kwargs in self.calls if signal == name]


@pytest.fixture
def signal_log():
    log = SignalLog()
    log.connect()
    yield log
    log.disconnect()
