from __future__ import annotations

import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import time_machine
from django.db import connection

from common.testing import assert_error
from conftest import client_for
from memories.idempotency import idempotency_keys_purge
from memories.models import IdempotencyKey, Memory
from memories.services import memory_text_changed

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


# --- the key is claimed inside the create transaction ---------------------------------------------

IN_FLIGHT = {
    "code": "conflict",
    "message": "A request with this Idempotency-Key is still in progress; retry shortly.",
    "details": {"Idempotency-Key": ["in flight"]},
}


class Held:
    """Holds the first create of BODY inside its transaction (after the memory, its usage count,
    tally and enrichment job are written, before the stored answer) until released."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.backend_pid: int | None = None

    def __call__(self, sender, memory, **kwargs) -> None:
        if memory.text_content == BODY["textContent"] and not self.inside.is_set():
            self.backend_pid = connection.connection.info.backend_pid
            self.inside.set()
            assert self.release.wait(30)

    def __enter__(self) -> Held:
        memory_text_changed.connect(self, dispatch_uid="idempotency-test-hold")
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        memory_text_changed.disconnect(dispatch_uid="idempotency-test-hold")


def post_from_thread(user, key="key-1"):
    """A keyed create from another thread, on its own database connection."""

    def run():
        try:
            return post(client_for(user), key=key)
        finally:
            connection.close()

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_repeat_while_the_first_is_inside_its_transaction_is_409_then_replays(
    user, enrichment_paused
):
    with Held() as held:
        first = post_from_thread(user)
        assert held.inside.wait(30)
        repeat = post(client_for(user))
        assert assert_error(repeat, 409) == IN_FLIGHT
        assert repeat["Retry-After"] == "1"
        held.release.set()
        created = first.result(timeout=30)
    assert created.status_code == 201 and not created.has_header("Idempotent-Replayed")
    replay = post(client_for(user))
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == created.json()
    assert Memory.objects.count() == 1
    stored = IdempotencyKey.objects.get()
    assert stored.state == IdempotencyKey.State.COMPLETED
    assert (stored.response_status, stored.response_body) == (201, created.json())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_different_body_is_422_even_while_the_first_is_in_flight_once_stored(
    user, enrichment_paused
):
    """While the first runs nothing is stored, so another body waits its turn (409); once the
    first is stored, the other body is refused (422)."""
    with Held() as held:
        first = post_from_thread(user)
        assert held.inside.wait(30)
        other = post(client_for(user), {"textContent": "Another text", "type": "note"})
        assert assert_error(other, 409) == IN_FLIGHT
        held.release.set()
        assert first.result(timeout=30).status_code == 201
    other = post(client_for(user), {"textContent": "Another text", "type": "note"})
    assert_error(other, 422, "unprocessable")
    assert Memory.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_create_that_fails_mid_transaction_leaves_nothing_and_a_retry_creates_once(
    user, enrichment_paused
):
    from costs.models import UserUsage
    from enrichment.models import EnrichmentJob
    from memories.tally import tally_counts

    def fail(sender, memory, **kwargs) -> None:
        raise RuntimeError("the process fails after the memory and its job are written")

    memory_text_changed.connect(fail, dispatch_uid="idempotency-test-fail")
    try:
        assert_error(post(client_for(user)), 500, "server_error")
    finally:
        memory_text_changed.disconnect(dispatch_uid="idempotency-test-fail")
    assert not IdempotencyKey.objects.exists()
    assert not Memory.objects.exists()
    assert not EnrichmentJob.objects.exists()
    assert UserUsage.objects.filter(user=user, memories_created__gt=0).count() == 0
    assert tally_counts()["memories"] == 0

    retry = post(client_for(user))
    assert retry.status_code == 201 and not retry.has_header("Idempotent-Replayed")
    assert post(client_for(user)).json() == retry.json()
    assert Memory.objects.count() == EnrichmentJob.objects.count() == 1
    assert UserUsage.objects.get(user=user).memories_created == 1
    assert tally_counts()["memories"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_whose_connection_dies_mid_create_frees_its_key_at_once(user, enrichment_paused):
    from enrichment.testing.processes import wait_until

    with Held() as held:
        first = post_from_thread(user)
        assert held.inside.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [held.backend_pid])

        def gone() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [held.backend_pid])
                return cursor.fetchone() is None

        wait_until(gone, timeout=30, what="the killed backend to exit")
        retry = post(client_for(user))  # no 409: the dead transaction took its lock with it
        held.release.set()
        assert first.result(timeout=30).status_code in (500, 503)  # its connection is gone
    assert retry.status_code == 201 and not retry.has_header("Idempotent-Replayed")
    assert Memory.objects.count() == 1
    assert Memory.objects.get().pk == uuid.UUID(retry.json()["id"])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_keyed_create_is_one_transaction_without_savepoints(user, enrichment_paused):
    client = client_for(user)
    post(client, key="warm-up")  # today's usage and tally rows exist, as on a busy day
    statements: list[tuple[str, bool]] = []
    commits = []
    commit = connection.commit

    def record(execute, sql, params, many, context):
        statements.append((sql.lstrip().upper(), context["connection"].in_atomic_block))
        return execute(sql, params, many, context)

    connection.commit = lambda: commits.append(1) or commit()
    try:
        with connection.execute_wrapper(record):
            response = post(client, key="counted")
    finally:
        del connection.commit
    assert response.status_code == 201
    assert len(commits) == 1
    assert not [sql for sql, _ in statements if "SAVEPOINT" in sql]
    in_transaction = [sql for sql, atomic in statements if atomic]
    assert in_transaction[0].startswith("SELECT PG_TRY_ADVISORY_XACT_LOCK")
    assert in_transaction[-1].startswith("INSERT INTO MEMORIES_IDEMPOTENCYKEY")
    # The lock and stored answer, the usage count, the memory, the tally, the job: one each.
    assert len(in_transaction) == 6
    # Outside the transaction only authentication reads the user.
    assert len(statements) - len(in_transaction) == 1
