"""AI costs: the price table, the cost ledger, the daily budget with its reservations, the
provider breaker and per-user daily usage. Money is Decimal cents (see costs.money)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Case, ExpressionWrapper, F, Q, When
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from common.clock import today

from .money import ZERO, CentsField, cents, cents_value

PRICE_DIGITS = {"max_digits": 16, "decimal_places": 6}


class Operation(models.TextChoices):
    CLASSIFICATION = "classification", "Classification"
    EMBEDDING = "embedding", "Embedding"
    SEARCH = "search", "Search query embedding"


class ModelPrice(models.Model):
    """A model's price per 1M tokens, in US cents, from `effective_from` on. A price change is a
    new row: calls before it keep the old price. Model "*" prices every model of its provider."""

    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100, help_text='"*" = any model of this provider.')
    input_cents_per_1m = models.DecimalField(
        "input (¢ / 1M tokens)", **PRICE_DIGITS, help_text="Uncached input tokens."
    )
    cached_input_cents_per_1m = models.DecimalField(
        "cached input (¢ / 1M tokens)",
        **PRICE_DIGITS,
        null=True,
        blank=True,
        help_text="Blank: cached tokens cost the input price.",
    )
    output_cents_per_1m = models.DecimalField(
        "output (¢ / 1M tokens)", **PRICE_DIGITS, default=Decimal(0)
    )
    batch_input_cents_per_1m = models.DecimalField(
        "batch input (¢ / 1M tokens)", **PRICE_DIGITS, null=True, blank=True
    )
    batch_output_cents_per_1m = models.DecimalField(
        "batch output (¢ / 1M tokens)", **PRICE_DIGITS, null=True, blank=True
    )
    effective_from = models.DateTimeField(default=timezone.now)
    note = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"], name="model_price_unique_start"
            )
        ]
        indexes = [models.Index(fields=["provider", "model", "-effective_from"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} from {self.effective_from:%Y-%m-%d}"


class AICostRecord(models.Model):
    """The ledger: one row per AI call, with the cost its tokens had at the price of the day."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The memory's UUID as a plain column: costs knows no memories.
    memory_id = models.UUIDField(null=True, blank=True, db_index=True)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    input_tokens = models.PositiveIntegerField(default=0, help_text="Includes cached tokens.")
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_cents = CentsField(db_column="cost_microcents", default=ZERO)
    price_fallback = models.BooleanField(
        default=False, help_text="Priced by AI_FALLBACK_PRICE_* (model not in the price table)."
    )
    # False: charged at its reservation's estimate because the reservation expired without a
    # settle (the worker died mid-call and the provider may have billed it). A late settle
    # replaces the row with the exact figures.
    reconciled = models.BooleanField(default=True)
    # Made through the provider's Batch API, priced at its batch rates.
    batch_api = models.BooleanField(default=False, db_default=False)
    # The reservation this call settled; unique, so settling twice records once.
    reservation_id = models.BigIntegerField(null=True, blank=True, unique=True)
    day = models.DateField(help_text="The budget day (AI_BUDGET_TIMEZONE) the cost counts in.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ai_cost_tracking"
        verbose_name = "AI cost record"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["day", "operation"], name="ai_cost_day_operation"),
            models.Index(fields=["day", "provider", "model"], name="ai_cost_day_model"),
            models.Index(fields=["-created_at", "-id"], name="ai_cost_recent"),
            models.Index(fields=["user", "day"], name="ai_cost_user_day"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.model} {self.cost_cents}¢"


class DailyCostTotal(models.Model):
    """The ledger rolled up per budget day, operation and model, written in the same
    transaction as each ledger row, so it always equals the ledger's sums to the micro-cent.
    Staff pages read these (a few rows per day) instead of scanning millions of calls."""

    day = models.DateField()
    operation = models.CharField(max_length=32, choices=Operation.choices)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    count = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_cents = CentsField(db_column="cost_microcents", default=ZERO)

    class Meta:
        db_table = "ai_cost_daily"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "operation", "provider", "model"], name="ai_cost_daily_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.operation} {self.model}: {self.count} calls, {self.cost_cents}¢"


def budget_default_limit() -> Decimal:
    """AI_DAILY_BUDGET_CENTS as it is now."""
    return cents(settings.AI_DAILY_BUDGET_CENTS)


def budget_limit_expression():
    """A day's limit, in SQL: the staff override; else, today, AI_DAILY_BUDGET_CENTS as it is
    now; else (a past day) the default that was in force when the day last spent."""
    return Case(
        When(Q(limit_overridden=True) | ~Q(day=today()), then=F("limit_cents")),
        default=cents_value(budget_default_limit()),
        output_field=CentsField(),
    )


def budget_open_condition() -> Q:
    """THE budget breaker rule, in SQL, used by every reader and by the reserving UPDATE: open
    when staff paused AI, when the budget was declared exhausted (the rest cannot cover a call),
    or when spend reached the limit."""
    return (
        Q(paused=True)
        | Q(exhausted_at__isnull=False)
        | Q(GreaterThanOrEqual(F("spent_cents"), budget_limit_expression()))
    )


class DailyBudgetQuerySet(models.QuerySet):
    def ensure(self, day) -> None:
        """Create the day's row if it is missing; safe when many processes race to do it."""
        if not self.filter(day=day).exists():
            self.bulk_create(
                [DailyBudget(day=day, limit_cents=budget_default_limit())], ignore_conflicts=True
            )

    def with_state(self):
        """Annotate each row with `effective_limit_cents` and `is_open` (the breaker rule)."""
        return self.annotate(
            effective_limit_cents=budget_limit_expression(),
            is_open=ExpressionWrapper(budget_open_condition(), output_field=models.BooleanField()),
        )


class DailyBudget(models.Model):
    """One row per budget day: the shared state every web and worker process reads and changes
    with conditional UPDATEs. Its breaker rule is `budget_open_condition`."""

    day = models.DateField(unique=True)
    # Staff override of the day's limit; without one the limit is AI_DAILY_BUDGET_CENTS, and
    # limit_cents records the default in force when the day last spent (history).
    limit_cents = CentsField(db_column="limit_microcents", default=ZERO)
    limit_overridden = models.BooleanField(default=False)
    spent_cents = CentsField(db_column="spent_microcents", default=ZERO)
    reserved_cents = CentsField(db_column="reserved_microcents", default=ZERO)
    operation_count = models.PositiveIntegerField(default=0)
    paused = models.BooleanField(default=False, help_text="Staff paused AI until resumed or reset.")
    opened_at = models.DateTimeField(null=True, blank=True, help_text="When the breaker opened.")
    exhausted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the rest of the budget could no longer cover a call (breaker open).",
    )
    # A call was refused because reservations in flight held the rest: the next settle or
    # release announces budget_room_freed so that the refused work retries at once.
    room_wanted = models.BooleanField(default=False)
    alerted_percent = models.PositiveSmallIntegerField(
        default=0, help_text="Highest alert threshold already announced for the day."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = DailyBudgetQuerySet.as_manager()

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"budget {self.day}"


class BudgetReservation(models.Model):
    """An estimate held in a day's `reserved_cents` while one AI call is in flight."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired (charged unreconciled)"

    day = models.DateField()
    amount_cents = CentsField(db_column="amount_microcents")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    memory_id = models.UUIDField(null=True, blank=True, db_index=True)
    # What the call is, so that an expiry can write its unreconciled ledger row.
    operation = models.CharField(max_length=32, choices=Operation.choices, blank=True, default="")
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.PositiveIntegerField(default=0, help_text="Estimated.")
    output_tokens = models.PositiveIntegerField(default=0, help_text="Estimated.")
    # Held for a Batch API request: estimated and settled at the batch rates.
    batch_api = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state", "expires_at"], name="reservation_expiry")]

    def __str__(self) -> str:
        return f"reservation {self.pk} {self.amount_cents}¢ {self.state}"


class ProviderBreaker(models.Model):
    """The AI provider's failure breaker, shared by every process (one row per name)."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half open"

    name = models.CharField(max_length=32, unique=True, default="default")
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    since = models.DateTimeField(default=timezone.now, help_text="When the state last changed.")
    consecutive_failures = models.PositiveIntegerField(default=0)
    probe_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Half open: when an unreported probe may be replaced."
    )

    def __str__(self) -> str:
        return f"provider breaker {self.name}: {self.state}"


class UserUsage(models.Model):
    """A user's AI-related activity on one budget day; the per-user limits count these."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage"
    )
    day = models.DateField()
    memories_created = models.PositiveIntegerField(default=0)
    enrichments = models.PositiveIntegerField(default=0)
    cost_cents = CentsField(db_column="cost_microcents", default=ZERO)
    # Set once (compare-and-set) when user_limit_reached was sent for the day.
    memory_limit_notified = models.BooleanField(default=False)
    enrichment_limit_notified = models.BooleanField(default=False)
    cost_limit_notified = models.BooleanField(default=False)

    class Meta:
        db_table = "user_usage"
        verbose_name_plural = "user usage"
        ordering = ["-day", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="user_usage_unique_day")
        ]
        indexes = [models.Index(fields=["day"], name="user_usage_day")]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.day}"
