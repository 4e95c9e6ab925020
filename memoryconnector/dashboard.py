"""The staff dashboard at /admin/dashboard/: today's spend against the budget, both breakers, the
queue and its workers, the last 30 days of cost, the latest AI calls and alerts, plain-words
warnings, and buttons for the staff actions.

Every number comes from the selectors behind the staff API (costs.selectors.ai_cost_tracking,
circuit_breaker_status and costs_daily; enrichment.selectors.worker_status), so the page and
the API cannot disagree; every button calls the service its API endpoint calls. The page
refreshes its live sections every ENRICHMENT_POLL_INTERVAL_MS from /admin/dashboard/live/, the
same template rendered alone (static/dashboard/dashboard.js swaps what changed). Staff only,
through the admin login (admin.site.admin_view, which also enforces CSRF on the buttons).
This module is the top layer: it may import every app.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from alerting import selectors as alerting_selectors
from common.admin import cents_exact, usd
from costs import budget as costs_budget
from costs import selectors as costs_selectors
from enrichment import selectors as enrichment_selectors
from enrichment import services as enrichment_services
from enrichment.models import EnrichmentJob, JobStatus

HISTORY_DAYS = 30
RECENT_OPERATIONS_SHOWN = 10
RECENT_ALERTS_SHOWN = 8
CHANNEL_NAMES = {"email": "email", "slack": "Slack"}
# Plain words for the reasons a job is deferred (enrichment.services and costs' user limits).
DEFERRAL_REASONS = {
    "budget_exhausted": "the daily budget is spent (its rest cannot cover a call)",
    "budget_paused": "staff paused AI",
    "rate_limited": "the AI provider asked us to slow down (429)",
    "budget_reserved": "the rest of the budget is held by calls in flight",
    "provider_breaker": "the AI provider is failing",
    "user_enrichment_limit": "the user's daily enrichment limit is reached",
    "user_cost_limit": "the user's daily cost limit is reached",
}


# --- formatting ---------------------------------------------------------------------------------


def spend_level(percent: Decimal) -> str:
    """The colour step of a share of the budget: the alert thresholds 50, 75 and 100 %."""
    if percent >= 100:
        return "level-100"
    if percent >= 75:
        return "level-75"
    if percent >= 50:
        return "level-50"
    return "level-0"


def duration_text(seconds: float) -> str:
    """A span for people: "5 h 12 min", "12 min", "45 s"."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (> 0): a round top for an axis, whose
    half is round too."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        top = Decimal(step) * Decimal(10) ** exponent
        if top >= value:
            return top
    return Decimal(10) ** (exponent + 1)  # pragma: no cover - the loop ends at 10


# --- the 30-day chart (server-rendered SVG: no script, no CDN) ------------------------------------

CHART_WIDTH = 720
CHART_HEIGHT = 210
CHART_LEFT = 64
CHART_RIGHT = 8
CHART_TOP = 12
CHART_BOTTOM = 28


def cost_chart(daily: list[dict]) -> dict:
    """Bar geometry for `costs_daily()["daily"]`: one bar per day coloured by its share of that
    day's budget, three grid lines with dollar labels, a few day labels, and today's budget as
    a dashed line when it fits the scale."""
    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    peak = max((day["totalCents"] for day in daily), default=Decimal(0))
    top = _nice_ceiling(peak) if peak > 0 else Decimal(1)
    slot = plot_width / max(1, len(daily))
    bar_width = max(2.0, slot * 0.72)
    bottom = CHART_TOP + plot_height

    def y_of(cents: Decimal) -> float:
        return bottom - float(cents / top) * plot_height

    bars = []
    labels = []
    for index, day in enumerate(daily):
        total = day["totalCents"]
        budget = day["budgetCents"]
        percent = costs_selectors.percent_of(total, budget) if budget is not None else Decimal(0)
        height = max(0.0, bottom - y_of(total))
        if total > 0:
            height = max(height, 1.5)  # a day with any spend stays visible
        x = CHART_LEFT + index * slot + (slot - bar_width) / 2
        bars.append(
            {
                "x": round(x, 2),
                "y": round(bottom - height, 2),
                "width": round(bar_width, 2),
                "height": round(height, 2),
                "level": spend_level(percent) if total > 0 else "level-none",
                "title": f"{day['day']:%a %d %b}: {usd(total)} ({cents_exact(total)} ¢), "
                f"{day['operationCount']} call(s)"
                + (f", {percent} % of {usd(budget)}" if budget is not None else ""),
            }
        )
        last = index == len(daily) - 1
        if last or (index % 7 == 0 and index < len(daily) - 3):
            labels.append(
                {
                    "x": round(CHART_LEFT + index * slot + slot / 2, 2),
                    "text": "today" if last else f"{day['day']:%d %b}",
                }
            )
    # Axis labels share one precision, enough to tell the half from the top apart.
    half_dollars = top / 2 / 100
    places = max(2, 1 - math.floor(math.log10(half_dollars)))
    grid = [
        {
            "y": round(y_of(top * share / 2), 2),
            "label": f"${top * share / 2 / 100:,.{places}f}",
        }
        for share in (0, 1, 2)
    ]
    budget_line = None
    today_budget = daily[-1]["budgetCents"] if daily else None
    if today_budget is not None and 0 < today_budget <= top:
        budget_line = {"y": round(y_of(today_budget), 2), "label": f"budget {usd(today_budget)}"}
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "bottom": bottom,
        "label_y": bottom + 18,
        "bars": bars,
        "labels": labels,
        "grid": grid,
        "budget_line": budget_line,
    }


# --- warnings -------------------------------------------------------------------------------------


def dashboard_warnings(
    *, breaker: dict, pipeline: dict, channels: list[dict], now: dt.datetime
) -> list[dict]:
    """What needs a person's attention, in plain words, most serious first."""
    found: list[dict] = []

    def warn(level: str, code: str, text: str) -> None:
        found.append({"level": level, "code": code, "text": text})

    reset_in = duration_text((breaker["resetsAt"] - now).total_seconds())
    if breaker["paused"]:
        warn(
            "critical",
            "ai_paused",
            "AI is paused by staff: no AI call is made until someone presses “Resume AI” or "
            f"the daily reset in {reset_in}.",
        )
    elif breaker["state"] == "open":
        warn(
            "critical",
            "budget_spent",
            f"Today's AI budget is spent ({usd(breaker['dailySpendCents'])} of "
            f"{usd(breaker['budgetCents'])}): AI calls stop and memories wait until the reset in "
            f"{reset_in}, or until the limit is raised.",
        )
    provider = breaker["providerBreaker"]
    if provider["state"] == "open":
        warn(
            "critical",
            "provider_breaker_open",
            f"The AI provider failed {provider['consecutiveFailures']} times in a row: calls stop "
            f"for {settings.AI_PROVIDER_COOLDOWN_SECONDS} s, then one test call checks whether it "
            "is back.",
        )
    elif provider["state"] == "half_open":
        warn(
            "warning",
            "provider_breaker_half_open",
            "The AI provider breaker is half open: one test call is checking whether the "
            "provider is back.",
        )
    worker = pipeline["worker"]
    if not worker["isRunning"]:
        warn(
            "critical",
            "no_worker",
            "No worker is alive (no heartbeat in the last "
            f"{enrichment_selectors.worker_alive_window_seconds()} s): jobs wait in the queue. "
            "Start one with “celery -A memoryconnector worker”.",
        )
    if not worker["enabled"]:
        warn(
            "warning",
            "processing_disabled",
            "Processing is switched off (ENRICHMENT_WORKER_ENABLED=false): jobs wait in the "
            "queue; none are lost.",
        )
    if worker["provider"] == "local":
        warn(
            "warning",
            "local_provider",
            "The local provider is in use: categories and embeddings are stand-ins made "
            "without AI. Set OPENAI_API_KEY to enrich with OpenAI.",
        )
    if not any(channel["configured"] for channel in channels if channel["name"] != "log"):
        hints = "; ".join(
            f"for {CHANNEL_NAMES.get(channel['name'], channel['name'])} set {channel['missing']}"
            for channel in channels
            if channel["name"] != "log" and channel["missing"]
        )
        warn(
            "warning",
            "no_alert_channel",
            f"No alert channel is configured: alerts reach only the log. {hints[:1].upper()}"
            f"{hints[1:]}.",
        )
    return found


# --- the page -------------------------------------------------------------------------------------


def batch_api_context(overview: dict) -> dict:
    """The Batch API's batches (enrichment.selectors.batches_overview) with dollar amounts."""

    def row(batch: dict) -> dict:
        extra = {"estimateUsd": usd(batch["estimateCents"])}
        if "costCents" in batch:
            extra["costUsd"] = usd(batch["costCents"])
            extra["outcomeText"] = ", ".join(
                f"{count} {state}" for state, count in sorted(batch["outcomes"].items())
            )
        return {**batch, **extra}

    return {
        **overview,
        "heldUsd": usd(overview["heldCents"]),
        "heldExact": cents_exact(overview["heldCents"]),
        "open": [row(batch) for batch in overview["open"]],
        "recent": [row(batch) for batch in overview["recent"]],
    }


def dashboard_context() -> dict:
    """Everything the dashboard shows, read through the staff API's selectors."""
    now = timezone.now()
    tracking = costs_selectors.ai_cost_tracking()
    breaker = costs_selectors.circuit_breaker_status()
    pipeline = enrichment_selectors.worker_status()
    history = costs_selectors.costs_daily(days=HISTORY_DAYS)
    channels = alerting_selectors.channels_status()
    alerts = list(alerting_selectors.alerts_recent(limit=RECENT_ALERTS_SHOWN))

    spend = tracking["dailySpend"]
    limit = spend["budgetCents"]
    percent = spend["percentUsed"]
    spent_width = min(Decimal(100), percent)
    reserved_percent = costs_selectors.percent_of(spend["reservedCents"], limit) if limit > 0 else 0
    today = history["daily"][-1]
    provider = breaker["providerBreaker"]
    heartbeat_window = enrichment_selectors.worker_alive_window_seconds()
    ai_on = breaker["state"] == "closed" and provider["state"] != "open"
    return {
        "now": now,
        "poll_interval_ms": settings.ENRICHMENT_POLL_INTERVAL_MS,
        "ai_on": ai_on,
        "spend": {
            **spend,
            "totalExact": cents_exact(spend["totalCents"]),
            "totalUsd": usd(spend["totalCents"]),
            "budgetExact": cents_exact(limit),
            "budgetUsd": usd(limit),
            "reservedExact": cents_exact(spend["reservedCents"]),
            "remainingUsd": usd(breaker["remainingCents"]),
            "level": spend_level(percent),
            "barWidth": f"{spent_width:.2f}",
            "reservedWidth": f"{min(Decimal(100) - spent_width, reserved_percent):.2f}",
        },
        "breaker": breaker,
        "provider_state": provider["state"].replace("_", " "),
        "reset_in": duration_text((breaker["resetsAt"] - now).total_seconds()),
        "by_operation": [
            {**row, "exact": cents_exact(row["totalCents"]), "usd": usd(row["totalCents"])}
            for row in tracking["todayCostsByOperation"]
        ],
        "by_model": [
            {**row, "exact": cents_exact(row["totalCents"]), "usd": usd(row["totalCents"])}
            for row in today["byModel"]
        ],
        "history": {
            "totalUsd": usd(history["totalCents"]),
            "operationCount": history["operationCount"],
            "startDay": history["startDay"],
            "chart": cost_chart(history["daily"]),
        },
        "recent_operations": [
            {**row, "exact": cents_exact(row["costCents"])}
            for row in tracking["recentOperations"][:RECENT_OPERATIONS_SHOWN]
        ],
        "worker": pipeline["worker"],
        "queue": pipeline["queue"],
        "reembedding": pipeline["reembedding"],
        "batch_api": batch_api_context(pipeline["batchApi"]),
        "deferred_reasons": [
            {
                **row,
                "reason": reason,
                "text": DEFERRAL_REASONS.get(reason, ""),
                "in": duration_text((row["until"] - now).total_seconds()) if row["until"] else "",
            }
            for reason, row in pipeline["queue"]["deferredByReason"].items()
        ],
        "heartbeat_window": heartbeat_window,
        "alerts": alerts,
        "channels": channels,
        "warnings": dashboard_warnings(
            breaker=breaker, pipeline=pipeline, channels=channels, now=now
        ),
    }


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        **dashboard_context(),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


@require_GET
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """The live sections alone, for the page's periodic refresh."""
    return TemplateResponse(request, "admin/dashboard_live.html", dashboard_context())


# --- the buttons: the same services as the staff API ---------------------------------------------


@require_POST
def trigger(request: HttpRequest) -> HttpResponse:
    # As POST /api/v1/admin/enrichment-worker/trigger.
    result = enrichment_services.jobs_sweep()
    text = f"Enrichment triggered: {result.dispatched} job(s) dispatched"
    if result.requeued:
        text += f", {result.requeued} stalled job(s) re-queued"
    if not settings.ENRICHMENT_WORKER_ENABLED:
        text += " (processing is disabled: ENRICHMENT_WORKER_ENABLED=false)"
    messages.success(request, text + ".")
    return redirect("dashboard:index")


@require_POST
def pause(request: HttpRequest) -> HttpResponse:
    # As POST /api/v1/admin/circuit-breaker/pause.
    if costs_budget.budget_pause():
        messages.success(request, "AI paused until resumed or the daily reset.")
    else:
        messages.warning(request, "AI was already paused.")
    return redirect("dashboard:index")


@require_POST
def resume(request: HttpRequest) -> HttpResponse:
    # As POST /api/v1/admin/circuit-breaker/resume.
    if not costs_budget.budget_resume():
        messages.warning(request, "AI was not paused.")
    elif costs_budget.budget_breaker_state() == "open":
        messages.warning(
            request,
            "AI resumed, but today's budget is spent: the breaker stays open until the daily "
            "reset or a higher limit.",
        )
    else:
        messages.success(request, "AI resumed.")
    return redirect("dashboard:index")


@require_POST
def retry_failed(request: HttpRequest) -> HttpResponse:
    # As POST /api/v1/admin/enrichment-worker/retry-failed.
    retried = enrichment_services.jobs_retry(
        queryset=EnrichmentJob.objects.filter(status=JobStatus.FAILED)
    )
    if retried:
        messages.success(request, f"{retried} failed job(s) queued again.")
    else:
        messages.info(request, "No failed job to retry.")
    return redirect("dashboard:index")


def _staff(view):
    """Staff only, through the admin login; CSRF-checked; never cached."""
    return admin.site.admin_view(view)


app_name = "dashboard"
urlpatterns = [
    path("", _staff(dashboard), name="index"),
    path("live/", _staff(dashboard_live), name="live"),
    path("trigger/", _staff(trigger), name="trigger"),
    path("pause/", _staff(pause), name="pause"),
    path("resume/", _staff(resume), name="resume"),
    path("retry-failed/", _staff(retry_failed), name="retry_failed"),
]
