"""Admin for costs: the editable price table, the read-only ledger, the daily budgets (pause,
resume and today's limit go through the services), reservations, the provider breaker and
per-user usage. Big tables never count every row (common.admin.BigTableAdminMixin: a capped
count, no full count, no facets) and never run a query per row."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.db.models import Count, Sum
from django.http import HttpRequest

from common.admin import BigTableAdminMixin, ReadOnlyBigTableAdmin, cents_exact, usd
from common.clock import today

from . import breaker, budget
from .models import (
    AICostRecord,
    BudgetReservation,
    DailyBudget,
    DailyCostTotal,
    ModelPrice,
    ProviderBreaker,
    UserUsage,
)
from .money import ZERO
from .selectors import percent_of


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


RECENT_LEDGER_DAYS = 7


class LedgerValueFilter(admin.SimpleListFilter):
    """Choices from the price table plus what the ledger used in the last few days (read from
    the daily roll-ups): both small reads, where Django's default filter would run SELECT
    DISTINCT over the whole ledger."""

    field = ""

    def lookups(self, request, model_admin):
        priced = ModelPrice.objects.exclude(model="*").values_list(self.field, flat=True)
        recent = (
            DailyCostTotal.objects.filter(day__gte=today() - dt.timedelta(days=RECENT_LEDGER_DAYS))
            .order_by()
            .values_list(self.field, flat=True)
            .distinct()
        )
        values = set(priced) | set(recent)
        if self.value():
            values.add(self.value())
        return [(value, value) for value in sorted(values)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class ProviderFilter(LedgerValueFilter):
    title = parameter_name = field = "provider"


class ModelFilter(LedgerValueFilter):
    title = parameter_name = field = "model"


# Changelist parameters the daily roll-ups can answer (and the roll-up field each filters).
_ROLLUP_PARAMS = {
    "operation__exact": "operation",
    "provider": "provider",
    "model": "model",
    "day__year": "day__year",
    "day__month": "day__month",
    "day__day": "day__day",
}
_PAGING_PARAMS = {"p", "o", "all", "_changelist_filters"}


def _filtered_totals(request, changelist) -> dict:
    """Totals of every row the filters select: from the daily roll-ups (a few rows per day,
    equal to the ledger) when the filters are ones they keep, else one aggregate over the
    ledger (a search or the fallback-price filter)."""
    params = {k: v for k, v in request.GET.items() if k not in _PAGING_PARAMS}
    if set(params) <= set(_ROLLUP_PARAMS):
        filters = {_ROLLUP_PARAMS[k]: v for k, v in params.items()}
        return DailyCostTotal.objects.filter(**filters).aggregate(
            count=Sum("count"),
            cents=Sum("cost_cents"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
    return changelist.queryset.order_by().aggregate(
        count=Count("id"),
        cents=Sum("cost_cents"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
    )


class _BudgetDaysChangeList:
    """The changelist as Django's date_hierarchy tag sees it, but with the budget days (one
    DailyBudget row per day with AI activity, a few hundred rows) in place of the ledger, so
    drilling down by date never runs SELECT DISTINCT over a million ledger rows."""

    def __init__(self, changelist):
        self._changelist = changelist
        self.model = DailyBudget
        days = DailyBudget.objects.all()
        for part in ("year", "month", "day"):
            value = changelist.params.get(f"day__{part}")
            if value and str(value).isdigit():
                days = days.filter(**{f"day__{part}": int(value)})
        self.queryset = days

    def __getattr__(self, name):
        return getattr(self._changelist, name)


@admin.register(AICostRecord)
class AICostRecordAdmin(ReadOnlyBigTableAdmin):
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
        "reconciled",
        "batch_api",
        "user",
        "memory_id",
    ]
    list_filter = [
        "operation", ProviderFilter, ModelFilter, "price_fallback", "reconciled", "batch_api",
    ]  # fmt: skip
    list_select_related = ["user"]
    # The drill-down is rendered from the budget days (see changelist_view); date_hierarchy
    # stays set so the changelist applies the chosen year, month and day.
    date_hierarchy = "day"
    # Exact, so that it finds the user by the email first instead of scanning the ledger.
    search_fields = ["=user__email"]
    search_help_text = "A user's email address (exact)."
    ordering = ["-created_at", "-id"]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # templates/admin/costs/aicostrecord/change_list.html shows both.
            response.context_data["budget_days"] = date_hierarchy(_BudgetDaysChangeList(changelist))
            # The total of every row the filters, search and date select (not only this page):
            # one aggregate query.
            totals = _filtered_totals(request, changelist)
            total_cents = totals["cents"] or ZERO
            response.context_data["filtered_total"] = {
                "count": totals["count"] or 0,
                "cents_exact": cents_exact(total_cents),
                "usd": usd(total_cents),
                "tokens": (totals["input_tokens"] or 0) + (totals["output_tokens"] or 0),
            }
        return response


@admin.register(DailyBudget)
class DailyBudgetAdmin(BigTableAdminMixin, admin.ModelAdmin):
    list_display = [
        "day",
        "state",
        "limit",
        "spent_cents",
        "percent",
        "reserved_cents",
        "operation_count",
        "paused",
        "exhausted_at",
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
        "exhausted_at",
        "opened_at",
        "alerted_percent",
        "updated_at",
    ]
    readonly_fields = [f for f in fields if f != "limit_cents"]
    date_hierarchy = "day"
    actions = ["pause_today", "resume_today"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_state()

    @admin.display(description="limit")
    def limit(self, obj: DailyBudget):
        return obj.effective_limit_cents

    @admin.display(description="% used")
    def percent(self, obj: DailyBudget):
        return percent_of(obj.spent_cents, obj.effective_limit_cents)

    @admin.display(description="breaker")
    def state(self, obj: DailyBudget) -> str:
        return "open" if obj.is_open else "closed"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Only today's limit can be changed (through budget_limit_set).
        return super().has_change_permission(request, obj) and (obj is None or obj.day == today())

    def save_model(self, request, obj, form, change):
        if "limit_cents" in form.changed_data:
            budget.budget_limit_set(limit_cents=obj.limit_cents)

    @admin.action(description="Pause AI for today (the breaker opens)")
    def pause_today(self, request, queryset):
        budget.budget_pause()
        self.message_user(request, "AI paused until resumed or the daily reset.")

    @admin.action(description="Resume AI")
    def resume_today(self, request, queryset):
        if budget.budget_resume():
            self.message_user(request, "AI resumed.")
        else:
            self.message_user(request, "AI was not paused.", level=messages.WARNING)


@admin.register(BudgetReservation)
class BudgetReservationAdmin(ReadOnlyBigTableAdmin):
    list_display = [
        "id",
        "day",
        "operation",
        "model",
        "amount_cents",
        "state",
        "batch_api",
        "user",
        "memory_id",
        "created_at",
        "expires_at",
    ]
    list_filter = ["state", "batch_api"]
    list_select_related = ["user"]
    date_hierarchy = "day"
    ordering = ["-id"]


@admin.register(ProviderBreaker)
class ProviderBreakerAdmin(ReadOnlyBigTableAdmin):
    list_display = ["name", "state", "since", "consecutive_failures", "probe_expires_at"]
    actions = ["close_breaker"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Needed for the action; the form itself has no editable field.
        return obj is None and admin.ModelAdmin.has_change_permission(self, request, obj)

    @admin.action(description="Close the provider breaker now")
    def close_breaker(self, request, queryset):
        breaker.provider_breaker_reset()
        self.message_user(request, "Provider breaker closed.")


@admin.register(UserUsage)
class UserUsageAdmin(ReadOnlyBigTableAdmin):
    list_display = ["day", "user", "memories_created", "enrichments", "cost_cents"]
    list_select_related = ["user"]
    date_hierarchy = "day"
    search_fields = ["user__email"]
    ordering = ["-day", "user_id"]
