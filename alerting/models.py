"""Alerts and their delivery record: one row per alert (unique dedup key), one row per attempt
on each channel."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AlertStatus(models.TextChoices):
    # Not yet delivered on every configured channel; the retry sweep sends it when due.
    PENDING = "pending", "Pending"
    # Accepted by a delivery channel (email, Slack): someone was told.
    DELIVERED = "delivered", "Delivered"
    # No delivery channel configured (or routed) for it: written to the log only. The log is a
    # record, not a delivery: nobody was told.
    LOG_ONLY = "log_only", "Log only"
    # Gave up after ALERT_MAX_ATTEMPTS; kept for staff to see and resend.
    FAILED = "failed", "Failed"


class Alert(models.Model):
    kind = models.CharField(max_length=64, db_index=True)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    # The same key again is a no-op: this constraint is what makes an alert fire once, even
    # when many workers raise it at the same moment.
    dedup_key = models.CharField(max_length=255, unique=True)
    title = models.CharField(max_length=255)
    message = models.TextField(blank=True)
    context = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=16, choices=AlertStatus.choices, default=AlertStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Channels that succeeded in the current round: a retry does not send to them again.
    delivered_channels = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    # Compare-and-set claim of one delivery run: a token plus a lease, so that a worker that died
    # mid-delivery does not hold the alert forever.
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="alert_due_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(severity__in=Severity.values), name="alert_severity_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=AlertStatus.values), name="alert_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"


class DeliveryStatus(models.TextChoices):
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class AlertDelivery(models.Model):
    """One attempt to send one alert on one channel. The error is stored redacted."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16)
    status = models.CharField(max_length=8, choices=DeliveryStatus.choices)
    error = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=["alert", "created_at"], name="alertdelivery_alert_idx")]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.channel} {self.status}"
