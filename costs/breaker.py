"""The AI provider's failure breaker, shared by every process through one row: closed, open
after AI_PROVIDER_FAILURE_THRESHOLD outages in a row, half open (one probe) after the cool-down.
Only outages count (5xx, timeouts, connection errors): a rate limit is not an outage."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import signals
from .models import ProviderBreaker
from .signals import send_on_commit

logger = logging.getLogger(__name__)

_BREAKER = "default"
_State = ProviderBreaker.State


def _breaker() -> ProviderBreaker:
    breaker = ProviderBreaker.objects.filter(name=_BREAKER).first()
    if breaker is None:
        ProviderBreaker.objects.bulk_create([ProviderBreaker(name=_BREAKER)], ignore_conflicts=True)
        breaker = ProviderBreaker.objects.get(name=_BREAKER)
    return breaker


def _breaker_changed(previous: str, state: str, failures: int) -> None:
    log = logger.warning if state != _State.CLOSED else logger.info
    log("provider breaker %s -> %s after %s consecutive failure(s)", previous, state, failures)
    send_on_commit(
        signals.provider_breaker_changed,
        ProviderBreaker,
        state=state,
        previous=previous,
        consecutive_failures=failures,
    )


def provider_breaker_quiet_sql() -> str:
    """An SQL expression, true when the breaker is closed with no failure counted: for callers
    that fold the breaker read into a statement of their own and pass the answer to
    `costs.metering.meter_batch(breaker_quiet=...)`."""
    table = ProviderBreaker._meta.db_table
    return (
        f"COALESCE((SELECT b.state = '{_State.CLOSED.value}' AND b.consecutive_failures = 0 "  # noqa: S608
        f"FROM {table} b "
        f"WHERE b.name = '{_BREAKER}'), false)"
    )


def provider_breaker_allow() -> bool:
    """May this caller call the AI provider now? Closed: yes. Open: no until the cool-down has
    passed; then exactly one caller across all processes wins the compare-and-set to half_open
    and probes; the others get False until the probe reports (or its probe timeout passes)."""
    breaker = _breaker()
    if breaker.state == _State.CLOSED:
        return True
    now = timezone.now()
    probe_until = now + dt.timedelta(seconds=settings.AI_PROVIDER_PROBE_TIMEOUT_SECONDS)
    if breaker.state == _State.OPEN:
        if now < breaker.since + dt.timedelta(seconds=settings.AI_PROVIDER_COOLDOWN_SECONDS):
            return False
        with transaction.atomic():
            won = ProviderBreaker.objects.filter(
                pk=breaker.pk, state=_State.OPEN, since=breaker.since
            ).update(state=_State.HALF_OPEN, since=now, probe_expires_at=probe_until)
            if won:
                _breaker_changed(_State.OPEN, _State.HALF_OPEN, breaker.consecutive_failures)
        return bool(won)
    # half_open: a probe is out. Replace it only if it never reported.
    if breaker.probe_expires_at is None or now < breaker.probe_expires_at:
        return False
    return bool(
        ProviderBreaker.objects.filter(
            pk=breaker.pk, state=_State.HALF_OPEN, probe_expires_at=breaker.probe_expires_at
        ).update(probe_expires_at=probe_until)
    )


def provider_breaker_record_success() -> None:
    """A provider call succeeded: a half-open probe closes the breaker; failures reset."""
    breaker = _breaker()
    if breaker.state == _State.HALF_OPEN:
        with transaction.atomic():
            if ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.HALF_OPEN).update(
                state=_State.CLOSED,
                since=timezone.now(),
                consecutive_failures=0,
                probe_expires_at=None,
            ):
                _breaker_changed(_State.HALF_OPEN, _State.CLOSED, 0)
    elif breaker.state == _State.CLOSED and breaker.consecutive_failures:
        ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.CLOSED).update(
            consecutive_failures=0
        )


def provider_breaker_record_failure() -> None:
    """A provider call failed with an outage (5xx, timeout, connection). AI_PROVIDER_FAILURE_
    THRESHOLD in a row open the breaker; a failed half-open probe opens it again."""
    breaker = _breaker()
    now = timezone.now()
    with transaction.atomic():
        if breaker.state == _State.HALF_OPEN:
            if ProviderBreaker.objects.filter(pk=breaker.pk, state=_State.HALF_OPEN).update(
                state=_State.OPEN,
                since=now,
                probe_expires_at=None,
                consecutive_failures=F("consecutive_failures") + 1,
            ):
                _breaker_changed(_State.HALF_OPEN, _State.OPEN, breaker.consecutive_failures + 1)
            return
        ProviderBreaker.objects.filter(pk=breaker.pk).update(
            consecutive_failures=F("consecutive_failures") + 1
        )
        if ProviderBreaker.objects.filter(
            pk=breaker.pk,
            state=_State.CLOSED,
            consecutive_failures__gte=settings.AI_PROVIDER_FAILURE_THRESHOLD,
        ).update(state=_State.OPEN, since=now):
            failures = ProviderBreaker.objects.values_list("consecutive_failures", flat=True)
            _breaker_changed(_State.CLOSED, _State.OPEN, failures.get(pk=breaker.pk))


def provider_breaker_release_probe() -> None:
    """The half-open probe ended without judging the provider (the budget refused it, or the
    provider answered a rate limit): let the next caller probe instead."""
    breaker = _breaker()
    if breaker.state == _State.HALF_OPEN:
        ProviderBreaker.objects.filter(
            pk=breaker.pk, state=_State.HALF_OPEN, probe_expires_at=breaker.probe_expires_at
        ).update(probe_expires_at=timezone.now())


def provider_breaker_reset() -> None:
    """Staff: close the provider breaker now."""
    breaker = _breaker()
    with transaction.atomic():
        if (
            ProviderBreaker.objects.filter(pk=breaker.pk)
            .exclude(state=_State.CLOSED)
            .update(
                state=_State.CLOSED,
                since=timezone.now(),
                consecutive_failures=0,
                probe_expires_at=None,
            )
        ):
            _breaker_changed(breaker.state, _State.CLOSED, 0)


def provider_breaker_reopens_at() -> dt.datetime:
    """When a caller refused by the breaker may try again: the end of the cool-down."""
    breaker = _breaker()
    return breaker.since + dt.timedelta(seconds=settings.AI_PROVIDER_COOLDOWN_SECONDS)
