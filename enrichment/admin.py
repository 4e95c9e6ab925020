"""Admin for the pipeline: enrichment jobs (retry, cancel), worker heartbeats, and the Memory
admin.

The Memory admin is registered here, not in memories/admin.py, on purpose: its "enrich again"
action calls enrichment.services, and the memories app never imports enrichment (imports point
down: enrichment -> memories). Every action calls the same service as the staff API."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from common.admin import (
    BigTableAdminMixin,
    ReadOnlyAdminMixin,
    ReadOnlyBigTableAdmin,
    TextInputFilter,
    UUIDInputFilter,
)
from memories.admin import UserEmailFilter
from memories.models import Embedding, Memory
from memories.services import memory_update

from . import services
from .models import AIBatch, AIBatchItem, EnrichmentJob, JobStatus, WorkerHeartbeat
from .providers.base import CATEGORIES
from .selectors import heartbeat_cutoff

ERROR_PREVIEW_CHARS = 80


class CategoryFilter(admin.SimpleListFilter):
    """The classifier's fixed category set: no DISTINCT scan of the memories table."""

    title = "category"
    parameter_name = "category"

    def lookups(self, request, model_admin):
        return [(category, category) for category in CATEGORIES] + [("-", "(none yet)")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(category="" if value == "-" else value)


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("no", "Live"), ("yes", "Deleted (tombstone)")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class MemoryIdFilter(UUIDInputFilter):
    title = "memory id"
    parameter_name = "memory_id"
    lookup = "memory_id"


class EnrichmentJobInline(admin.TabularInline):
    """The memory's latest jobs, newest first (read-only)."""

    model = EnrichmentJob
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    ordering = ["-id"]
    fields = readonly_fields = [
        "status",
        "attempts",
        "deferred_reason",
        "last_error",
        "created_at",
        "finished_at",
    ]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Memory)
class MemoryAdmin(BigTableAdminMixin, admin.ModelAdmin):
    list_display = [
        "preview",
        "user",
        "type",
        "category",
        "enrichment_status",
        "created_at",
        "enriched_at",
        "is_deleted",
    ]
    list_filter = ["enrichment_status", "type", CategoryFilter, UserEmailFilter, DeletedFilter]
    list_select_related = ["user"]
    search_fields = ["text_content"]
    ordering = ["-created_at", "-id"]
    actions = ["enrich_again"]
    inlines = [EnrichmentJobInline]
    fieldsets = [
        (None, {"fields": ["id", "user", "text_content", "type"]}),
        (
            "Enrichment (written by the AI pipeline)",
            {"fields": ["enrichment_status", "category", "tags", "enriched_at", "embedding_info"]},
        ),
        ("Dates", {"fields": ["created_at", "updated_at", "deleted_at"]}),
    ]
    # The AI's output and the bookkeeping are never typed in; text and type are editable and
    # saved through memories.services.memory_update, which queues a new enrichment.
    readonly_fields = [
        "id",
        "user",
        "enrichment_status",
        "category",
        "tags",
        "enriched_at",
        "embedding_info",
        "created_at",
        "updated_at",
        "deleted_at",
    ]

    @admin.display(description="text")
    def preview(self, obj: Memory) -> str:
        return Truncator(obj.text_content).chars(80)

    @admin.display(description="deleted", boolean=True)
    def is_deleted(self, obj: Memory) -> bool:
        return obj.deleted_at is not None

    @admin.display(description="embedding")
    def embedding_info(self, obj: Memory) -> str:
        embedding = Embedding.objects.filter(memory=obj).only("model", "dimensions").first()
        if embedding is None:
            return "none yet"
        return f"{embedding.model}, {embedding.dimensions} dimensions"

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Memories are created by their users through the API (which counts their daily limit).
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # A tombstoned memory is history: shown, not edited.
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_enrich_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("memories.change_memory")

    def save_model(self, request, obj, form, change):
        # Through the service: new text goes back to pending and gets a job, atomically.
        memory_update(
            memory=Memory.objects.get(pk=obj.pk),
            text_content=form.cleaned_data.get("text_content"),
            type=form.cleaned_data.get("type"),
        )

    @admin.action(description="Enrich again (queue a new job)", permissions=["enrich"])
    def enrich_again(self, request: HttpRequest, queryset: QuerySet[Memory]) -> None:
        queued = services.memories_enrich_again(memories=queryset)
        self.message_user(
            request,
            f"{queued} memory(ies) queued for enrichment. Deleted memories and memories with a "
            "job already waiting are skipped.",
            messages.SUCCESS if queued else messages.WARNING,
        )


@admin.register(EnrichmentJob)
class EnrichmentJobAdmin(ReadOnlyBigTableAdmin):
    list_display = [
        "id",
        "memory_link",
        "status",
        "deferred_reason",
        "attempts",
        "error",
        "worker",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "deferred_reason", MemoryIdFilter]
    ordering = ["-id"]
    actions = ["retry", "cancel"]
    fieldsets = [
        (None, {"fields": ["memory_link", "status", "attempts", "worker"]}),
        ("Last error", {"fields": ["last_error", "deferred_reason"]}),
        (
            "Timing",
            {
                "fields": [
                    "not_before",
                    "lease_expires_at",
                    "dispatched_at",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "updated_at",
                ]
            },
        ),
        ("Kept for a re-run", {"fields": ["classification", "text_hash"]}),
    ]
    readonly_fields = [
        "memory_link",
        "status",
        "attempts",
        "worker",
        "last_error",
        "deferred_reason",
        "not_before",
        "lease_expires_at",
        "dispatched_at",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "classification",
        "text_hash",
    ]

    @admin.display(description="memory", ordering="memory_id")
    def memory_link(self, obj: EnrichmentJob) -> str:
        url = reverse("admin:memories_memory_change", args=[obj.memory_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.memory_id)[:8])

    @admin.display(description="last error / waiting for")
    def error(self, obj: EnrichmentJob) -> str:
        if obj.status == JobStatus.DEFERRED and obj.deferred_reason:
            until = f" until {obj.not_before:%Y-%m-%d %H:%M} UTC" if obj.not_before else ""
            return f"deferred: {obj.deferred_reason}{until}"
        return Truncator(obj.last_error).chars(ERROR_PREVIEW_CHARS)

    # Jobs are written by the pipeline only; staff act on them with the actions.
    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("enrichment.change_enrichmentjob")

    @admin.action(description="Retry (failed or cancelled jobs)", permissions=["act"])
    def retry(self, request: HttpRequest, queryset: QuerySet[EnrichmentJob]) -> None:
        retried = services.jobs_retry(queryset=queryset)
        self.message_user(
            request,
            f"{retried} job(s) queued again. Only failed and cancelled jobs of live memories "
            "without a job already waiting are retried.",
            messages.SUCCESS if retried else messages.WARNING,
        )

    @admin.action(description="Cancel (waiting jobs)", permissions=["act"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[EnrichmentJob]) -> None:
        cancelled = services.jobs_cancel(queryset=queryset)
        self.message_user(
            request,
            f"{cancelled} job(s) cancelled. Only pending and deferred jobs can be cancelled.",
            messages.SUCCESS if cancelled else messages.WARNING,
        )


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "pid", "started_at", "last_seen", "alive"]
    ordering = ["hostname"]
    fields = readonly_fields = ["hostname", "pid", "started_at", "last_seen"]

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: WorkerHeartbeat) -> bool:
        return obj.last_seen >= heartbeat_cutoff()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- the Batch API -------------------------------------------------------------------------------


class BatchIdFilter(TextInputFilter):
    title = "batch id"
    parameter_name = "batch_id"
    lookup = "batch_id"

    def clean(self, value: str):
        return int(value)


@admin.register(AIBatch)
class AIBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Batches sent to OpenAI's Batch API: read-only, written by enrichment.batch_api; staff can
    cancel an open one (the poll then settles what was answered and releases the rest)."""

    list_display = [
        "id",
        "status",
        "provider_status",
        "purpose",
        "model",
        "item_count",
        "requests_completed",
        "requests_failed",
        "estimate_cents",
        "created_at",
        "expires_at",
        "finished_at",
        "items_link",
    ]
    list_filter = ["status", "purpose"]
    ordering = ["-id"]
    actions = ["cancel"]
    readonly_fields = [
        "status",
        "provider_status",
        "purpose",
        "operation",
        "provider",
        "model",
        "dimensions",
        "provider_batch_id",
        "input_file_id",
        "output_file_id",
        "error_file_id",
        "item_count",
        "requests_completed",
        "requests_failed",
        "estimate_cents",
        "error",
        "created_at",
        "submitted_at",
        "expires_at",
        "last_polled_at",
        "finished_at",
        "items_by_state",
        "items_link",
    ]
    fields = readonly_fields

    @admin.display(description="items")
    def items_link(self, obj: AIBatch) -> str:
        url = reverse("admin:enrichment_aibatchitem_changelist")
        return format_html('<a href="{}?batch_id={}">items</a>', url, obj.pk)

    @admin.display(description="items by outcome")
    def items_by_state(self, obj: AIBatch) -> str:
        rows = obj.items.values("state").annotate(count=Count("pk")).order_by("state")
        return ", ".join(f"{row['state']}: {row['count']}" for row in rows) or "-"

    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("enrichment.change_aibatch")

    @admin.action(description="Cancel at the provider (open batches)", permissions=["act"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[AIBatch]) -> None:
        from .batch_api import batch_cancel  # the openai client: loaded only when used

        cancelled = sum(batch_cancel(batch_id=pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            f"{cancelled} batch(es) cancelled at the provider; the next poll settles what was "
            "answered and releases the rest. Only open batches can be cancelled.",
            messages.SUCCESS if cancelled else messages.WARNING,
        )


@admin.register(AIBatchItem)
class AIBatchItemAdmin(ReadOnlyBigTableAdmin):
    list_display = [
        "id",
        "batch_id",
        "memory_id",
        "state",
        "error",
        "reservation_id",
        "finished_at",
    ]
    list_filter = ["state", BatchIdFilter, MemoryIdFilter]
    ordering = ["-id"]
    fields = readonly_fields = [
        "batch",
        "memory_id",
        "user_id",
        "text_hash",
        "input_tokens",
        "reservation_id",
        "state",
        "error",
        "finished_at",
    ]
