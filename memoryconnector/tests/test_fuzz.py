"""API fuzzing: schemathesis generates requests from our own OpenAPI schema and checks that no
endpoint answers 500 and every response matches the schema — as a staff user and as a user."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from accounts.services import tokens_for_user

schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", WSGIHandler())
# Every request carries a real token (the `bearer` fixture); the Authorization header, an API-key
# style scheme in the schema, is not generated.
schema.config.generation.update(with_security_parameters=False)

FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples every run: CI failures reproduce locally
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Like Django's test client: the test's transaction must survive each request."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(params=["staff", "user"])
def bearer(request, make_user) -> dict[str, str]:
    user = make_user(f"{request.param}-fuzz@example.com", staff=request.param == "staff")
    return {"Authorization": f"Bearer {tokens_for_user(user)['accessToken']}"}


@pytest.mark.fuzz
@pytest.mark.django_db
@schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_makes_the_api_fail_or_break_its_schema(case, bearer):
    # Every check but "valid data is accepted": a syntactically valid but unknown cursor is
    # rightly refused, and an opaque token's validity cannot be told in a schema.
    case.call_and_validate(headers=bearer, excluded_checks=[positive_data_acceptance])
