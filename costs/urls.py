"""Routes of the costs app, under /api/v1/ (staff only)."""

from django.urls import path

from . import api

urlpatterns = [
    path("admin/ai-cost-tracking", api.AiCostTrackingApi.as_view(), name="admin-ai-cost-tracking"),
    path("admin/circuit-breaker", api.CircuitBreakerApi.as_view(), name="admin-circuit-breaker"),
    path(
        "admin/circuit-breaker/pause",
        api.CircuitBreakerPauseApi.as_view(),
        name="admin-circuit-breaker-pause",
    ),
    path(
        "admin/circuit-breaker/resume",
        api.CircuitBreakerResumeApi.as_view(),
        name="admin-circuit-breaker-resume",
    ),
    path("admin/budget/today", api.BudgetTodayApi.as_view(), name="admin-budget-today"),
    path("admin/costs/daily", api.CostsDailyApi.as_view(), name="admin-costs-daily"),
]
