"""Admin for costs: the editable price table, the read-only ledger, the daily budgets (pause,
resume and today's limit go through the services), reservations, the provider breaker and
per-user usage. Big tables never count every row (show_full_result_count = False)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from common.clock import today

from . import services
from .models import (
    AICostRecord,
    BudgetReservation,
    DailyBudget,
    ModelPrice,
    ProviderBreaker,
    UserUsage,
)
from .selectors import budget_limit_of, percent_of


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the services: visible, never edited by hand."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "provider",
        "model",
        "input_cents_per_1m",
        "cached_input_cents_per_1m",
        "output_cents_per_1m",
        "batch_input_cents_per_1m",
        "batch_output_cents_per_1m",
        "effective_from",
    ]
    list_filter = ["provider"]
    search_fields = ["model"]
    ordering = ["provider", "model", "-effective_from"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "effective_from", "note"]}),
        (
            "US cents per 1M tokens (a price change is a new row with a later start)",
            {
                "fields": [
                    "input_cents_per_1m",
                    "cached_input_cents_per_1m",
                    "output_cents_per_1m",
                    "batch_input_cents_per_1m",
                    "batch_output_cents_per_1m",
                ]
            },
        ),
    ]


@admin.register(AICostRecord)
class AICostRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "day",
        "operation",
        "provider",
        "model",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "cost_cents",
        "price_fallback",
        "user",
        "memory_id",
    ]
    list_filter = ["operation", "provider", "model", "price_fallback"]
    list_select_related = ["user"]
    date_hierarchy = "day"
    search_fields = ["user__email", "model"]
    ordering = ["-created_at", "-id"]


@admin.register(DailyBudget)
class DailyBudgetAdmin(admin.ModelAdmin):
    list_display = [
        "day",
        "state",
        "limit",
        "spent_cents",
        "percent",
        "reserved_cents",
        "operation_count",
        "paused",
        "opened_at",
        "alerted_percent",
    ]
    fields = [
        "day",
        "limit_cents",
        "limit_overridden",
        "spent_cents",
        "reserved_cents",
        "operation_count",
        "paused",
        "opened_at",
        "alerted_percent",
        "updated_at",
    ]
    readonly_fields = [f for f in fields if f != "limit_cents"]
    date_hierarchy = "day"
    show_full_result_count = False
    actions = ["pause_today", "resume_today"]

    @admin.display(description="limit")
    def limit(self, obj: DailyBudget):
        return budget_limit_of(obj)

    @admin.display(description="% used")
    def percent(self, obj: DailyBudget):
        return percent_of(obj.spent_cents, budget_limit_of(obj))

    @admin.display(description="breaker")
    def state(self, obj: DailyBudget) -> str:
        return "open" if obj.paused or obj.spent_cents >= budget_limit_of(obj) else "closed"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Only today's limit can be changed (through budget_limit_set).
        return super().has_change_permission(request, obj) and (obj is None or obj.day == today())

    def save_model(self, request, obj, form, change):
        if "limit_cents" in form.changed_data:
            services.budget_limit_set(limit_cents=obj.limit_cents)

    @admin.action(description="Pause AI for today (the breaker opens)")
    def pause_today(self, request, queryset):
        services.budget_pause()
        self.message_user(request, "AI paused until resumed or the daily reset.")

    @admin.action(description="Resume AI")
    def resume_today(self, request, queryset):
        if services.budget_resume():
            self.message_user(request, "AI resumed.")
        else:
            self.message_user(request, "AI was not paused.", level=messages.WARNING)


@admin.register(BudgetReservation)
class BudgetReservationAdmin(ReadOnlyAdmin):
    list_display = ["id", "day", "amount_cents", "state", "user", "created_at", "expires_at"]
    list_filter = ["state"]
    list_select_related = ["user"]
    date_hierarchy = "day"
    ordering = ["-id"]


@admin.register(ProviderBreaker)
class ProviderBreakerAdmin(ReadOnlyAdmin):
    list_display = ["name", "state", "since", "consecutive_failures", "probe_expires_at"]
    actions = ["close_breaker"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Needed for the action; the form itself has no editable field.
        return obj is None and super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    @admin.action(description="Close the provider breaker now")
    def close_breaker(self, request, queryset):
        services.provider_breaker_reset()
        self.message_user(request, "Provider breaker closed.")


@admin.register(UserUsage)
class UserUsageAdmin(ReadOnlyAdmin):
    list_display = ["day", "user", "memories_created", "enrichments", "cost_cents"]
    list_select_related = ["user"]
    date_hierarchy = "day"
    search_fields = ["user__email"]
    ordering = ["-day", "user_id"]
