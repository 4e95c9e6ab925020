"""manage.py commands refuse bad arguments with a CommandError that says what is wrong, before
they change anything; from the command line that is one line on stderr and exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from costs import selectors as cost_selectors
from enrichment.models import EnrichmentJob, JobStatus
from memories.services import memory_create

pytestmark = pytest.mark.django_db


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=StringIO())
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e99", "Ensure that there are no more than 18 digits in total. (got '1e99')"),
        ("NaN", "A valid number is required. (got 'NaN')"),
        ("Infinity", "A valid number is required. (got 'Infinity')"),
        ("-5", "Ensure this value is greater than or equal to 0. (got '-5')"),
        ("1.0000001", "Ensure that there are no more than 6 decimal places. (got '1.0000001')"),
        ("", "a value is required (got '')"),
    ],
)
def test_budget_refuses_a_limit_the_api_would_refuse(value, message):
    assert refused("budget", "--set-today", value) == f"Error: argument --set-today: {message}"
    assert cost_selectors.circuit_breaker_status()["budgetOverridden"] is False


def test_budget_still_takes_six_decimal_places():
    out = StringIO()
    call_command("budget", "--set-today", "12.345678", stdout=out)
    assert "Limit        12.345678 cents (set by staff)" in out.getvalue()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Ensure this value is greater than or equal to 1. (got '0')"),
        ("-3", "Ensure this value is greater than or equal to 1. (got '-3')"),
        ("100000", "Ensure this value is less than or equal to 366. (got '100000')"),
        ("7.5", "A valid integer is required. (got '7.5')"),
    ],
)
def test_costs_report_refuses_a_day_count_the_api_would_refuse(value, message):
    assert refused("costs_report", "--days", value) == f"Error: argument --days: {message}"


def test_costs_prices_load_refuses_a_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    assert refused("costs_prices_load", "--file", str(missing)) == (
        f"Error: argument --file: no such file: {str(missing)!r}"
    )


def test_costs_prices_load_refuses_a_file_that_is_not_a_price_file(tmp_path):
    broken = tmp_path / "prices.json"
    broken.write_text('{"prices": [', encoding="utf-8")
    assert refused("costs_prices_load", "--file", str(broken)).startswith(
        f"{broken}: not a usable price file: JSONDecodeError: "
    )
    broken.write_text('{"no prices": []}', encoding="utf-8")
    assert refused("costs_prices_load", "--file", str(broken)) == (
        f"{broken}: not a usable price file: KeyError: 'prices'"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--memory", "not-a-uuid"), "argument --memory: Must be a valid UUID. (got 'not-a-uuid')"),
        (("--limit", "-1"), "argument --limit: Ensure this value is greater than or equal to 1."),
        (("--limit", "0"), "argument --limit: Ensure this value is greater than or equal to 1."),
        (("--limit", "ten"), "argument --limit: A valid integer is required. (got 'ten')"),
    ],
)
def test_enrich_refuses_bad_arguments(args, message):
    assert refused("enrich", *args).startswith(f"Error: {message}")


def test_enrich_refuses_an_unknown_user_and_dispatches_nothing(user):
    # A typo in --user must not run the sweep over everybody's jobs.
    memory_create(user=user, text_content="waiting", type="note")
    EnrichmentJob.objects.update(dispatched_at=None)  # never sent (broker down): sweep's to send

    assert refused("enrich", "--user", "nobody@example.com") == (
        "No user with email 'nobody@example.com'"
    )
    job = EnrichmentJob.objects.get()
    assert job.status == JobStatus.PENDING and job.dispatched_at is None


def test_enrich_takes_a_known_user_in_any_case(user):
    out = StringIO()
    call_command("enrich", "--user", user.email.upper(), "--dry-run", stdout=out)
    assert "job(s) due" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["enrich", "--limit", "-1"],
            "CommandError: argument --limit: Ensure this value is greater than or equal to 1. "
            "(got '-1')",
        ),
        (
            ["budget", "--set-today", "1e99"],
            "CommandError: argument --set-today: Ensure that there are no more than 18 digits "
            "in total. (got '1e99')",
        ),
    ],
)
def test_manage_py_prints_one_line_and_exits_1(args, line):
    result = subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "memoryconnector.settings.test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line]  # no usage text, no traceback
    assert result.stdout == ""
