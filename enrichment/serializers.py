"""Wire shapes of the enrichment staff API (field names as the reference API)."""

from rest_framework import serializers


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


class QueueSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    processing = serializers.IntegerField()
    deferred = serializers.IntegerField()
    completedToday = serializers.IntegerField()  # noqa: N815
    failedToday = serializers.IntegerField()  # noqa: N815


class WorkerStatusSerializer(serializers.Serializer):
    worker = WorkerSerializer()
    queue = QueueSerializer()
    timestamp = serializers.DateTimeField()


class TriggerSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    timestamp = serializers.DateTimeField()
    dispatched = serializers.IntegerField()
    requeued = serializers.IntegerField()


class RetryFailedSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    retried = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
