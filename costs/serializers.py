"""Wire shapes of the cost admin API (camelCase, field names as the reference API).

Money is Decimal cents rounded to 6 places and sent as a JSON number (`"totalCents": 125.5`), as
the reference does; percentages have 2 places."""

from __future__ import annotations

from rest_framework import serializers

from common.serializers import QuerySerializer, StrictSerializer

from .models import Operation


def CentsField(**kwargs) -> serializers.DecimalField:  # noqa: N802 - a field factory
    return serializers.DecimalField(
        max_digits=24, decimal_places=6, coerce_to_string=False, **kwargs
    )


def PercentField(**kwargs) -> serializers.DecimalField:  # noqa: N802
    return serializers.DecimalField(
        max_digits=12, decimal_places=2, coerce_to_string=False, **kwargs
    )


STATES = ["closed", "open"]
PROVIDER_STATES = ["closed", "open", "half_open"]


class DailySpendSerializer(serializers.Serializer):
    totalCents = CentsField(help_text="Spent today (US cents).")  # noqa: N815
    percentUsed = PercentField()  # noqa: N815
    operationCount = serializers.IntegerField()  # noqa: N815
    circuitState = serializers.ChoiceField(choices=STATES)  # noqa: N815
    budgetCents = CentsField(help_text="Today's limit.")  # noqa: N815
    reservedCents = CentsField(help_text="Held by AI calls in flight.")  # noqa: N815
    day = serializers.DateField(help_text="The budget day (AI_BUDGET_TIMEZONE).")


class OperationTotalSerializer(serializers.Serializer):
    operation = serializers.ChoiceField(choices=Operation.choices)
    count = serializers.IntegerField()
    totalTokens = serializers.IntegerField(help_text="Input + output tokens.")  # noqa: N815
    totalCents = CentsField()  # noqa: N815


class CostRecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    operation = serializers.ChoiceField(choices=Operation.choices)
    provider = serializers.CharField()
    model = serializers.CharField()
    tokens = serializers.IntegerField(help_text="Input + output tokens.")
    inputTokens = serializers.IntegerField(help_text="Includes cached tokens.")  # noqa: N815
    cachedTokens = serializers.IntegerField()  # noqa: N815
    outputTokens = serializers.IntegerField()  # noqa: N815
    costCents = CentsField()  # noqa: N815
    reconciled = serializers.BooleanField(
        help_text="false: charged at its reservation's estimate because the call's worker was "
        "lost before it settled (the provider may have billed it); a late settle replaces it."
    )
    userId = serializers.IntegerField(allow_null=True)  # noqa: N815
    memoryId = serializers.UUIDField(allow_null=True)  # noqa: N815
    day = serializers.DateField()
    createdAt = serializers.DateTimeField()  # noqa: N815


class AiCostTrackingSerializer(serializers.Serializer):
    dailySpend = DailySpendSerializer()  # noqa: N815
    todayCostsByOperation = OperationTotalSerializer(many=True)  # noqa: N815
    recentOperations = CostRecordSerializer(  # noqa: N815
        many=True, help_text="The latest 50 AI calls, newest first."
    )
    timestamp = serializers.DateTimeField()


class ProviderBreakerSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=PROVIDER_STATES)
    since = serializers.DateTimeField(allow_null=True, help_text="When the state last changed.")
    consecutiveFailures = serializers.IntegerField()  # noqa: N815


class CircuitBreakerSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=STATES,
        help_text="open: staff paused AI, or today's budget is exhausted (spent, or its rest "
        "cannot cover the next call while nothing in flight could free room).",
    )
    dailySpendCents = CentsField()  # noqa: N815
    percentUsed = PercentField()  # noqa: N815
    operationCount = serializers.IntegerField()  # noqa: N815
    timestamp = serializers.DateTimeField()
    budgetCents = CentsField(help_text="Today's limit.")  # noqa: N815
    budgetOverridden = serializers.BooleanField(  # noqa: N815
        help_text="Staff set today's limit (else AI_DAILY_BUDGET_CENTS)."
    )
    reservedCents = CentsField()  # noqa: N815
    remainingCents = CentsField(help_text="Limit - spent - reserved, at least 0.")  # noqa: N815
    paused = serializers.BooleanField()
    openReason = serializers.ChoiceField(  # noqa: N815
        choices=["budget_paused", "budget_exhausted"],
        allow_null=True,
        help_text="null when closed.",
    )
    exhaustedAt = serializers.DateTimeField(  # noqa: N815
        allow_null=True, help_text="When the rest of the budget could no longer cover a call."
    )
    openedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    day = serializers.DateField()
    timezone = serializers.CharField()
    resetsAt = serializers.DateTimeField(help_text="The next daily reset.")  # noqa: N815
    providerBreaker = ProviderBreakerSerializer()  # noqa: N815


class BudgetTodaySerializer(StrictSerializer):
    limitCents = serializers.DecimalField(  # noqa: N815
        max_digits=18,
        decimal_places=6,
        min_value=0,
        allow_null=True,
        coerce_to_string=False,
        help_text="Today's limit in US cents; null returns to AI_DAILY_BUDGET_CENTS.",
    )


class CostsDailyQuerySerializer(QuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30)
    format = serializers.ChoiceField(
        choices=["json", "csv"], required=False, help_text="csv: one row per day and model."
    )


class ModelTotalSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    count = serializers.IntegerField()
    totalTokens = serializers.IntegerField()  # noqa: N815
    totalCents = CentsField()  # noqa: N815


class DayCostsSerializer(serializers.Serializer):
    day = serializers.DateField()
    budgetCents = CentsField(allow_null=True)  # noqa: N815
    totalCents = CentsField()  # noqa: N815
    operationCount = serializers.IntegerField()  # noqa: N815
    totalTokens = serializers.IntegerField()  # noqa: N815
    byOperation = OperationTotalSerializer(many=True)  # noqa: N815
    byModel = ModelTotalSerializer(many=True)  # noqa: N815


class CostsDailySerializer(serializers.Serializer):
    days = serializers.IntegerField()
    startDay = serializers.DateField()  # noqa: N815
    endDay = serializers.DateField()  # noqa: N815
    timezone = serializers.CharField()
    totalCents = CentsField()  # noqa: N815
    operationCount = serializers.IntegerField()  # noqa: N815
    totalTokens = serializers.IntegerField()  # noqa: N815
    daily = DayCostsSerializer(many=True, help_text="Every day of the range, oldest first.")


CSV_COLUMNS = [
    ("day", "day"),
    ("operation", "operation"),
    ("provider", "provider"),
    ("model", "model"),
    ("count", "count"),
    ("input_tokens", "inputTokens"),
    ("cached_tokens", "cachedTokens"),
    ("output_tokens", "outputTokens"),
    ("total_tokens", "totalTokens"),
    ("total_cents", "totalCents"),
]
