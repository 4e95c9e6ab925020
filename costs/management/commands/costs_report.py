"""manage.py costs_report: AI costs of the last N budget days as a table."""

from __future__ import annotations

import datetime as dt

from django.conf import settings

from common import commands
from common.clock import today
from costs import selectors
from costs.money import ZERO
from costs.serializers import CostsDailyQuerySerializer


class Command(commands.Command):
    help = "Print AI costs of the last N budget days, grouped by operation, model, user or day."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            # The API's rule for the same value (GET /admin/costs/daily?days=).
            type=commands.field_type(CostsDailyQuerySerializer().fields["days"]),
            default=30,
            help="How many days, 1 to 366 (default 30).",
        )
        parser.add_argument(
            "--by",
            choices=sorted(selectors.REPORT_GROUPS),
            default="operation",
            help="Group by (default operation).",
        )

    def handle(self, *args, days: int, by: str, **options):
        end = today()
        start = end - dt.timedelta(days=days - 1)
        rows = selectors.cost_totals(start=start, end=end, by=by)
        self.stdout.write(
            f"AI costs {start} .. {end} ({days} day(s), {settings.AI_BUDGET_TIMEZONE}), by {by}"
        )
        labels = {
            "operation": lambda r: r["operation"],
            "model": lambda r: f"{r['provider']}/{r['model']}",
            "user": lambda r: r["user__email"] or f"(user {r['user_id']})",
            "day": lambda r: str(r["day"]),
        }
        table = [(labels[by](r), r["count"], r["totalTokens"], r["totalCents"]) for r in rows]
        total = (
            "total",
            sum(r[1] for r in table),
            sum(r[2] for r in table),
            sum((r[3] for r in table), ZERO),
        )
        width = max([len(by), len("total"), *(len(r[0]) for r in table)])
        header = f"{by:<{width}}  {'calls':>8}  {'tokens':>12}  {'cents':>16}  {'USD':>12}"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for label, count, tokens, cost in [*table, total]:
            if label == "total":
                self.stdout.write("-" * len(header))
            usd = (cost / 100).quantize(ZERO)
            self.stdout.write(f"{label:<{width}}  {count:>8}  {tokens:>12}  {cost:>16}  {usd:>12}")
