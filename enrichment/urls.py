from django.urls import path

from . import api

urlpatterns = [
    path("admin/enrichment-worker", api.WorkerStatusApi.as_view(), name="enrichment-worker"),
    path(
        "admin/enrichment-worker/trigger",
        api.TriggerApi.as_view(),
        name="enrichment-worker-trigger",
    ),
    path(
        "admin/enrichment-worker/retry-failed",
        api.RetryFailedApi.as_view(),
        name="enrichment-worker-retry-failed",
    ),
]
