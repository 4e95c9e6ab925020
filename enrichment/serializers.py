"""Wire shapes of the enrichment staff API (field names as the reference API)."""

from rest_framework import serializers

from costs.serializers import CentsField


class LiveWorkerSerializer(serializers.Serializer):
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    startedAt = serializers.DateTimeField()  # noqa: N815
    lastSeen = serializers.DateTimeField()  # noqa: N815
    jobsDone = serializers.IntegerField(help_text="Jobs completed today.")  # noqa: N815


class WorkerSerializer(serializers.Serializer):
    isRunning = serializers.BooleanField(help_text="A worker heartbeat is fresh.")  # noqa: N815
    enabled = serializers.BooleanField(help_text="ENRICHMENT_WORKER_ENABLED")
    pollIntervalMs = serializers.IntegerField()  # noqa: N815
    provider = serializers.ChoiceField(choices=["openai", "local"])
    liveWorkers = LiveWorkerSerializer(many=True)  # noqa: N815


class DeferredReasonSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    until = serializers.DateTimeField(
        allow_null=True, help_text="The earliest time a job deferred for this reason is due."
    )


class QueueSerializer(serializers.Serializer):
    pending = serializers.IntegerField(
        help_text="Every job waiting: those due now and those deferred (a breaker open, a "
        "user limit reached), as the reference counts them."
    )
    processing = serializers.IntegerField()
    deferred = serializers.IntegerField(help_text="The deferred part of `pending`.")
    deferredByReason = serializers.DictField(  # noqa: N815
        child=DeferredReasonSerializer(),
        help_text='Deferred jobs by reason ("budget_exhausted", "budget_paused", '
        '"budget_reserved", "rate_limited", "provider_breaker", "user_enrichment_limit", '
        '"user_cost_limit"), each with its count and earliest due time.',
    )
    completedToday = serializers.IntegerField()  # noqa: N815
    failedToday = serializers.IntegerField()  # noqa: N815


class ReembeddingSerializer(serializers.Serializer):
    pending = serializers.IntegerField(
        help_text="Live memories whose embedding was made by another model or at other "
        "dimensions: re-embedded in the background after the queue is empty."
    )
    model = serializers.CharField(help_text="The active embedding model.")
    dimensions = serializers.IntegerField(
        allow_null=True, help_text="EMBEDDING_DIMENSIONS if the model takes it, else null."
    )


class BatchSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    providerBatchId = serializers.CharField(allow_blank=True)  # noqa: N815
    status = serializers.CharField()
    providerStatus = serializers.CharField(allow_blank=True)  # noqa: N815
    purpose = serializers.CharField()
    model = serializers.CharField()
    items = serializers.IntegerField()
    requestsCompleted = serializers.IntegerField()  # noqa: N815
    requestsFailed = serializers.IntegerField()  # noqa: N815
    estimateCents = CentsField(help_text="Held for its items at the batch prices.")  # noqa: N815
    error = serializers.CharField(allow_blank=True)
    createdAt = serializers.DateTimeField()  # noqa: N815
    submittedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    expiresAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    lastPolledAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    finishedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815


class FinishedBatchSerializer(BatchSerializer):
    outcomes = serializers.DictField(
        child=serializers.IntegerField(), help_text="Items per outcome (applied, released, ...)."
    )
    costCents = CentsField(help_text="What its answers cost, at the batch prices.")  # noqa: N815


class BatchApiSerializer(serializers.Serializer):
    open = BatchSerializer(many=True, help_text="Batches not finished yet.")
    openItems = serializers.IntegerField()  # noqa: N815
    heldCents = CentsField(help_text="Budget held by the open batches' items.")  # noqa: N815
    recent = FinishedBatchSerializer(many=True, help_text="The last finished batches.")


class WorkerStatusSerializer(serializers.Serializer):
    worker = WorkerSerializer()
    queue = QueueSerializer()
    reembedding = ReembeddingSerializer()
    batchApi = BatchApiSerializer(help_text="OpenAI Batch API batches.")  # noqa: N815
    timestamp = serializers.DateTimeField()


class TriggerSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    timestamp = serializers.DateTimeField()
    dispatched = serializers.IntegerField(help_text="Jobs sent to the workers by this sweep.")
    requeued = serializers.IntegerField(help_text="Jobs of lost workers handed out again.")
    enabled = serializers.BooleanField(
        help_text="ENRICHMENT_WORKER_ENABLED: when false the sweep dispatches nothing."
    )


class RetryFailedSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    retried = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
