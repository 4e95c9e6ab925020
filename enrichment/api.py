"""Staff endpoints for the pipeline: worker status, trigger a sweep, retry failed jobs."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .models import EnrichmentJob, JobStatus
from .serializers import RetryFailedSerializer, TriggerSerializer, WorkerStatusSerializer

TRIGGER_MESSAGE = "Enrichment processing triggered"


class WorkerStatusApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["admin"],
        responses={200: WorkerStatusSerializer},
        summary="Worker liveness and queue counts",
    )
    def get(self, request):
        return Response(WorkerStatusSerializer(selectors.worker_status()).data)


class TriggerApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["admin"],
        request=None,
        responses={200: TriggerSerializer},
        summary="Run the sweep now: dispatch due jobs",
    )
    def post(self, request):
        result = services.jobs_sweep()
        return Response(
            {
                "success": True,
                # The reference's exact words; the counts are in their own keys.
                "message": TRIGGER_MESSAGE,
                "timestamp": timezone.now(),
                "dispatched": result.dispatched,
                "requeued": result.requeued,
                "enabled": settings.ENRICHMENT_WORKER_ENABLED,
            }
        )


class RetryFailedApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["admin"],
        request=None,
        responses={200: RetryFailedSerializer},
        summary="Queue every failed job again",
    )
    def post(self, request):
        retried = services.jobs_retry(
            queryset=EnrichmentJob.objects.filter(status=JobStatus.FAILED)
        )
        return Response({"success": True, "retried": retried, "timestamp": timezone.now()})
