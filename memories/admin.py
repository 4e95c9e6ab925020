"""Admin for the memories app's bookkeeping rows: embeddings and stored Idempotency-Key answers,
both read-only. The Memory admin itself lives in enrichment/admin.py, because its "enrich
again" action calls the enrichment services and this app never imports enrichment."""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyBigTableAdmin, TextInputFilter

from .models import Embedding, IdempotencyKey


class UserEmailFilter(TextInputFilter):
    title = "user email"
    parameter_name = "user_email"
    lookup = "user__email__iexact"


@admin.register(Embedding)
class EmbeddingAdmin(ReadOnlyBigTableAdmin):
    list_display = ["memory_id", "model", "dimensions", "created_at"]
    ordering = ["-id"]
    # The vector (hundreds of floats) is left out: it says nothing to a person.
    fields = ["memory_id", "model", "dimensions", "created_at"]
    readonly_fields = fields


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyBigTableAdmin):
    list_display = ["key", "user", "state", "response_status", "created_at"]
    list_filter = ["state", UserEmailFilter]
    list_select_related = ["user"]
    search_fields = ["key"]
    ordering = ["-created_at", "-id"]
    fields = [
        "user",
        "key",
        "fingerprint",
        "state",
        "response_status",
        "response_body",
        "created_at",
    ]
    readonly_fields = fields
