"""Read queries over memories for the API, the admin and the dashboard."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet
from django.http import Http404

from .models import Memory
from .tally import tally_counts


def memory_list(
    *,
    user,
    type: str | None = None,  # noqa: A002
    enrichment_status: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> QuerySet[Memory]:
    qs = Memory.objects.alive().filter(user=user)
    if type:
        qs = qs.filter(type=type)
    if enrichment_status:
        qs = qs.filter(enrichment_status=enrichment_status)
    if created_after:
        qs = qs.filter(created_at__gt=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def memory_get(*, user, memory_id) -> Memory:
    """The user's live memory, or 404 — also for another user's id."""
    memory = Memory.objects.alive().filter(user=user, pk=memory_id).first()
    if memory is None:
        raise Http404
    return memory


def memory_counts() -> dict[str, int]:
    """{memories, memoriesToday, embeddings}: live ones, from the running tally."""
    return tally_counts()
