"""Staff view of alerts: a read-only history with its delivery attempts, and "Resend"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import BigTableAdminMixin

from .models import Alert, AlertDelivery
from .services import alert_resend


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "channel", "status", "attempt", "error")
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(BigTableAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "severity",
        "kind",
        "title",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "severity", "kind")
    search_fields = ("dedup_key", "title")
    ordering = ("-created_at", "-id")
    # The history only grows: never count the whole table for the changelist (the mixin caps
    # the count and turns off the full count and facets).
    list_per_page = 50
    inlines = (AlertDeliveryInline,)
    actions = ("resend",)
    fieldsets = (
        (None, {"fields": ("kind", "severity", "dedup_key", "title", "message", "context")}),
        (
            "Delivery",
            {
                "fields": (
                    "status",
                    "delivered_channels",
                    "attempts",
                    "next_attempt_at",
                    "last_error",
                    "created_at",
                    "delivered_at",
                    "claimed_until",
                )
            },
        ),
    )
    readonly_fields = (
        "kind",
        "severity",
        "dedup_key",
        "title",
        "message",
        "context",
        "status",
        "delivered_channels",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "delivered_at",
        "claimed_until",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Alerts are raised by the system (or `manage.py send_test_alert`), never typed in.
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerting.change_alert")

    @admin.action(description="Resend the selected alerts", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = 0
        for alert in queryset:
            alert_resend(alert=alert)
            count += 1
        self.message_user(
            request,
            f"{count} alert(s) queued to be sent again on every configured channel.",
            messages.SUCCESS,
        )
