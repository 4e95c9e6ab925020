"""Staff API for AI costs and the budget: reference-compatible monitoring endpoints, staff
actions (pause, resume, today's limit) and the daily cost history (JSON or CSV)."""

from __future__ import annotations

import csv
import io

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from . import budget, selectors
from .serializers import (
    CSV_COLUMNS,
    AiCostTrackingSerializer,
    BudgetTodaySerializer,
    CircuitBreakerSerializer,
    CostsDailyQuerySerializer,
    CostsDailySerializer,
)


class StaffApi(APIView):
    permission_classes = [IsAdminUser]


class CsvRenderer(BaseRenderer):
    """Renders a list of cost rows (selectors.cost_rows) as CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([header for header, _ in CSV_COLUMNS])
        for row in data:
            writer.writerow([row[key] for _, key in CSV_COLUMNS])
        return out.getvalue().encode(self.charset)


def _circuit_breaker_response() -> Response:
    return Response(CircuitBreakerSerializer(selectors.circuit_breaker_status()).data)


class AiCostTrackingApi(StaffApi):
    @extend_schema(
        tags=["admin"],
        responses={200: AiCostTrackingSerializer},
        summary="Today's AI spend, its split by operation, and the latest 50 AI calls",
    )
    def get(self, request):
        return Response(AiCostTrackingSerializer(selectors.ai_cost_tracking()).data)


class CircuitBreakerApi(StaffApi):
    @extend_schema(
        tags=["admin"],
        responses={200: CircuitBreakerSerializer},
        summary="Budget breaker, today's budget, and the provider breaker",
    )
    def get(self, request):
        return _circuit_breaker_response()


class CircuitBreakerPauseApi(StaffApi):
    @extend_schema(
        tags=["admin"],
        request=None,
        responses={200: CircuitBreakerSerializer},
        summary="Pause AI calls (the breaker opens) until resumed or the daily reset",
    )
    def post(self, request):
        budget.budget_pause()
        return _circuit_breaker_response()


class CircuitBreakerResumeApi(StaffApi):
    @extend_schema(
        tags=["admin"],
        request=None,
        responses={200: CircuitBreakerSerializer},
        summary="Resume AI calls (the breaker stays open while today's budget is spent)",
    )
    def post(self, request):
        budget.budget_resume()
        return _circuit_breaker_response()


class BudgetTodayApi(StaffApi):
    @extend_schema(
        tags=["admin"],
        request=BudgetTodaySerializer,
        responses={200: CircuitBreakerSerializer},
        summary="Set today's AI budget in cents at once (null: back to AI_DAILY_BUDGET_CENTS)",
    )
    def put(self, request):
        serializer = BudgetTodaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        budget.budget_limit_set(limit_cents=serializer.validated_data["limitCents"])
        return _circuit_breaker_response()


class CostsDailyApi(StaffApi):
    renderer_classes = [JSONRenderer, CsvRenderer]

    def handle_exception(self, exc):
        # Errors are JSON of the one error shape, also when CSV was asked for.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        tags=["admin"],
        parameters=[CostsDailyQuerySerializer],
        responses={
            (200, "application/json"): CostsDailySerializer,
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="One row per day, operation and model: "
                + ", ".join(header for header, _ in CSV_COLUMNS),
            ),
        },
        summary="AI costs per day by operation and model for the last `days` days",
    )
    def get(self, request):
        query = CostsDailyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        days = query.validated_data["days"]
        if request.accepted_renderer.format == CsvRenderer.format:
            report = selectors.costs_daily(days=days)
            rows = selectors.cost_rows(start=report["startDay"], end=report["endDay"])
            filename = f"ai-costs-{report['startDay']}-{report['endDay']}.csv"
            return Response(
                rows, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
            )
        return Response(CostsDailySerializer(selectors.costs_daily(days=days)).data)
