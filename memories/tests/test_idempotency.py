import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import time_machine
from django.db import connection

from common.testing import assert_error
from conftest import client_for
from memories.idempotency import idempotency_keys_purge
from memories.models import IdempotencyKey, Memory

URL = "/api/v1/memories"
BODY = {"textContent": "Parked on level 3", "type": "note"}


def post(client, body=BODY, key="key-1"):
    return client.post(URL, body, "json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_repeat_replays_the_first_answer_and_creates_nothing(api):
    first = post(api)
    second = post(api)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Memory.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(api):
    post(api)
    response = post(api, {"textContent": "something else", "type": "note"})
    assert_error(response, 422, "unprocessable")
    assert Memory.objects.count() == 1


@pytest.mark.django_db
def test_a_repeat_while_the_first_is_in_flight_is_409(api, user):
    from memories.idempotency import request_fingerprint

    IdempotencyKey.objects.create(
        user=user,
        key="key-1",
        fingerprint=request_fingerprint(method="POST", path=URL, data=BODY),
        created_at=dt.datetime.now(dt.UTC),
    )
    response = post(api)
    assert_error(response, 409, "conflict")
    assert response["Retry-After"] == "1"
    assert Memory.objects.count() == 0


@pytest.mark.django_db
def test_a_claim_left_by_a_dead_request_is_taken_over_after_the_lock_timeout(api, user, settings):
    from memories.idempotency import request_fingerprint

    IdempotencyKey.objects.create(
        user=user,
        key="key-1",
        fingerprint=request_fingerprint(method="POST", path=URL, data=BODY),
        created_at=dt.datetime.now(dt.UTC)
        - dt.timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS + 1),
    )
    response = post(api)
    assert response.status_code == 201
    assert Memory.objects.count() == 1
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.COMPLETED


@pytest.mark.django_db
def test_keys_are_per_user(api, make_user):
    bob = client_for(make_user("bob@example.com"))
    assert post(api).status_code == 201
    replay = post(bob)
    assert replay.status_code == 201 and not replay.has_header("Idempotent-Replayed")
    assert Memory.objects.count() == 2


@pytest.mark.django_db
def test_a_key_is_kept_for_24_hours(api):
    first = post(api)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=23), tick=False):
        api.credentials()  # tokens would expire; log in again under the travelled clock
        api.force_authenticate(Memory.objects.get().user)
        assert post(api)["Idempotent-Replayed"] == "true"
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=25), tick=False):
        fresh = post(api)
        assert fresh.status_code == 201 and not fresh.has_header("Idempotent-Replayed")
        assert fresh.json()["id"] != first.json()["id"]
        assert idempotency_keys_purge() == 0  # the renewed key is current
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=50), tick=False):
        assert idempotency_keys_purge() == 1


@pytest.mark.django_db
def test_a_failed_request_does_not_burn_the_key(api):
    bad = post(api, {"textContent": ""})
    assert_error(bad, 400)
    assert post(api).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "a" * 256, "has space", "tab\there", "ünïcode"])
def test_a_malformed_key_is_400(api, key):
    response = api.post(URL, BODY, "json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error(response, 400, "invalid_idempotency_key")
    assert Memory.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_identical_requests_at_once_create_exactly_one_memory(user, enrichment_paused):
    assert connection.vendor == "postgresql"
    workers = 16
    barrier = threading.Barrier(workers)

    def attempt(_):
        client = client_for(user)
        barrier.wait()
        try:
            response = post(client, key="race-key")
            return response.status_code, response.json(), response.has_header("Idempotent-Replayed")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))

    assert Memory.objects.count() == 1
    created = [body for status, body, replayed in results if status == 201 and not replayed]
    assert len(created) == 1
    memory_id = created[0]["id"]
    for status, body, _replayed in results:
        assert status in (201, 409), body
        if status == 201:
            assert body["id"] == memory_id
        else:
            assert body["error"]["code"] == "conflict"
    # Every client that retries after a 409 gets the one memory back.
    final = post(client_for(user), key="race-key")
    assert final["Idempotent-Replayed"] == "true" and final.json()["id"] == memory_id
