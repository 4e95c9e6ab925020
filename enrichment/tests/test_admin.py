"""The admin for memories, jobs and workers (registered by enrichment/admin.py): filters, read-only
AI fields, actions through the enrichment services, and changelists that never count a big
table in full (the capped paginator) nor fail on a malformed filter value."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from enrichment.models import EnrichmentJob, JobStatus, WorkerHeartbeat
from memories.models import EnrichmentStatus, Memory
from memoryconnector.tests.staff_ui import worker_alive

pytestmark = pytest.mark.django_db

MEMORIES = "/admin/memories/memory/"
JOBS = "/admin/enrichment/enrichmentjob/"


@pytest.fixture
def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


def memory_of(user, text="Buy oat milk", **fields) -> Memory:
    return Memory.objects.create(user=user, text_content=text, **fields)


def job_of(memory, status=JobStatus.PENDING, **fields) -> EnrichmentJob:
    return EnrichmentJob.objects.create(memory=memory, status=status, text_hash="0" * 64, **fields)


# --- memories -------------------------------------------------------------------------------------


def test_it_searches_memories_in_their_text(admin_client, user):
    memory_of(user, "Dentist on Monday")
    memory_of(user, "Buy oat milk")

    page = admin_client.get(MEMORIES, {"q": "dentist"}).content.decode()

    assert "Dentist on Monday" in page and "Buy oat milk" not in page


@pytest.mark.parametrize(
    "query, shown",
    [
        ({"enrichment_status__exact": "failed"}, "failed one"),
        ({"type__exact": "idea"}, "an idea"),
        ({"category": "health"}, "health one"),
        ({"category": "-"}, "an idea"),
        ({"user_email": "BOB@example.com"}, "bob's"),
        ({"deleted": "yes"}, "tombstone"),
    ],
)
def test_it_filters_memories(admin_client, user, make_user, query, shown):
    from django.utils import timezone

    memory_of(user, "failed one", enrichment_status=EnrichmentStatus.FAILED, category="work")
    memory_of(user, "an idea", type="idea")
    memory_of(user, "health one", category="health")
    memory_of(make_user("bob@example.com"), "bob's", category="work")
    memory_of(user, "tombstone", deleted_at=timezone.now(), category="work")

    response = admin_client.get(MEMORIES, query)

    assert response.status_code == 200
    rows = response.context["cl"].result_list
    assert [m.text_content for m in rows] == [shown]


def test_the_user_filter_is_a_text_box_that_keeps_the_other_filters(admin_client, user):
    memory_of(user)
    page = admin_client.get(MEMORIES, {"type__exact": "note", "q": "oat"}).content.decode()
    assert 'name="user_email"' in page
    assert '<input type="hidden" name="type__exact" value="note">' in page
    assert '<input type="hidden" name="q" value="oat">' in page


def test_the_ai_fields_of_a_memory_are_read_only(admin_client, user):
    memory = memory_of(user, category="work", tags=["x"])
    page = admin_client.get(reverse("admin:memories_memory_change", args=[memory.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("category", "tags", "enrichment_status", "enriched_at", "user"):
        assert f'name="{field}"' not in html, field
    assert 'name="text_content"' in html and 'name="type"' in html
    assert "Add memory" not in html


def test_new_text_saved_in_the_admin_is_enriched_again(admin_client, user):
    memory = memory_of(user, enrichment_status=EnrichmentStatus.ENRICHED, category="work")
    url = reverse("admin:memories_memory_change", args=[memory.pk])

    response = admin_client.post(
        url,
        {
            "text_content": "Buy oat milk and bread",
            "type": "task",
            "enrichment_jobs-TOTAL_FORMS": "0",
            "enrichment_jobs-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content
    memory.refresh_from_db()
    assert memory.text_content == "Buy oat milk and bread" and memory.type == "task"
    assert memory.enrichment_status == EnrichmentStatus.PENDING
    assert memory.enrichment_jobs.filter(status=JobStatus.PENDING).count() == 1


def test_enrich_again_queues_a_job_per_memory_without_one(admin_client, user):
    done = memory_of(user, "done", enrichment_status=EnrichmentStatus.ENRICHED)
    waiting = memory_of(user, "waiting")
    job_of(waiting)

    response = admin_client.post(
        MEMORIES,
        {"action": "enrich_again", "_selected_action": [done.pk, waiting.pk]},
        follow=True,
    )

    assert "1 memory(ies) queued for enrichment." in response.content.decode()
    assert done.enrichment_jobs.count() == 1 and waiting.enrichment_jobs.count() == 1
    done.refresh_from_db()
    assert done.enrichment_status == EnrichmentStatus.PENDING


def test_a_deleted_memory_is_shown_but_not_editable(admin_client, user):
    from django.utils import timezone

    memory = memory_of(user, deleted_at=timezone.now())
    page = admin_client.get(reverse("admin:memories_memory_change", args=[memory.pk]))
    assert page.status_code == 200
    assert 'name="text_content"' not in page.content.decode()


# --- jobs -----------------------------------------------------------------------------------------


def test_it_lists_jobs_with_their_last_error_and_filters_them(admin_client, user):
    job_of(memory_of(user), JobStatus.FAILED, last_error="provider error: 500 upstream exploded")
    job_of(memory_of(user), JobStatus.DEFERRED)

    failed = admin_client.get(JOBS, {"status__exact": "failed"})
    deferred = admin_client.get(JOBS, {"status__exact": "deferred"})

    assert "500 upstream exploded" in failed.content.decode()
    assert [j.status for j in failed.context["cl"].result_list] == ["failed"]
    assert [j.status for j in deferred.context["cl"].result_list] == ["deferred"]


def test_a_job_shows_its_whole_last_error(admin_client, user):
    error = "provider error: " + "x" * 300
    job = job_of(memory_of(user), JobStatus.FAILED, last_error=error)
    page = admin_client.get(reverse("admin:enrichment_enrichmentjob_change", args=[job.pk]))
    assert error in page.content.decode()


def test_jobs_filter_by_memory_id_and_a_malformed_id_matches_nothing(admin_client, user):
    memory = memory_of(user)
    job_of(memory)
    job_of(memory_of(user, "other"))

    found = admin_client.get(JOBS, {"memory_id": str(memory.pk)})
    malformed = admin_client.get(JOBS, {"memory_id": "not-a-uuid"})

    assert [j.memory_id for j in found.context["cl"].result_list] == [memory.pk]
    assert malformed.status_code == 200 and list(malformed.context["cl"].result_list) == []


def test_retry_queues_failed_jobs_again(admin_client, user):
    failed = job_of(memory_of(user), JobStatus.FAILED, last_error="boom")
    completed = job_of(memory_of(user), JobStatus.COMPLETED)

    response = admin_client.post(
        JOBS, {"action": "retry", "_selected_action": [failed.pk, completed.pk]}, follow=True
    )

    assert "1 job(s) queued again." in response.content.decode()
    assert EnrichmentJob.objects.filter(memory=failed.memory, status="pending").count() == 1
    assert EnrichmentJob.objects.filter(memory=completed.memory).count() == 1


def test_cancel_stops_waiting_jobs_only(admin_client, user):
    pending = job_of(memory_of(user))
    done = job_of(memory_of(user), JobStatus.COMPLETED)

    admin_client.post(JOBS, {"action": "cancel", "_selected_action": [pending.pk, done.pk]})

    pending.refresh_from_db()
    done.refresh_from_db()
    assert pending.status == JobStatus.CANCELLED and pending.last_error == "cancelled by staff"
    assert done.status == JobStatus.COMPLETED


def test_jobs_are_never_added_or_deleted_by_hand(admin_client, user):
    job = job_of(memory_of(user))
    assert admin_client.get(reverse("admin:enrichment_enrichmentjob_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:enrichment_enrichmentjob_delete", args=[job.pk]))
    ).status_code == 403


def test_a_staff_member_without_the_permission_gets_no_job_actions(make_user, user):
    from django.contrib.auth.models import Permission

    clerk = make_user("clerk@example.com", staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_enrichmentjob"))
    client = Client()
    client.force_login(clerk)
    job_of(memory_of(user), JobStatus.FAILED)

    page = client.get(JOBS)

    assert page.status_code == 200
    assert 'value="retry"' not in page.content.decode()


def test_worker_heartbeats_show_who_is_alive(admin_client):
    import datetime as dt

    from django.utils import timezone

    worker_alive("alive@host")
    WorkerHeartbeat.objects.create(
        hostname="gone@host",
        pid=1,
        started_at=timezone.now() - dt.timedelta(hours=2),
        last_seen=timezone.now() - dt.timedelta(hours=1),
    )
    response = admin_client.get("/admin/enrichment/workerheartbeat/")
    html = response.content.decode()
    assert "alive@host" in html and "gone@host" in html
    assert html.count('alt="True"') == 1 and html.count('alt="False"') == 1


# --- embeddings and idempotency keys --------------------------------------------------------------


@pytest.mark.parametrize("model", ["embedding", "idempotencykey"])
def test_bookkeeping_rows_are_read_only(admin_client, model):
    assert admin_client.get(f"/admin/memories/{model}/").status_code == 200
    assert admin_client.get(f"/admin/memories/{model}/add/").status_code == 403
