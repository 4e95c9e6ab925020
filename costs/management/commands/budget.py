"""manage.py budget: show today's AI budget and breakers; set today's limit, pause, resume."""

from __future__ import annotations

from common import commands
from costs import breaker, budget, selectors
from costs.serializers import BudgetTodaySerializer


class Command(commands.Command):
    help = (
        "Show today's AI budget and breakers; --set-today CENTS, --reset-today, --pause, --resume."
    )

    def add_arguments(self, parser):
        actions = parser.add_mutually_exclusive_group()
        actions.add_argument(
            "--set-today",
            metavar="CENTS",
            # The API's rule for the same value (PUT /admin/budget/today).
            type=commands.field_type(BudgetTodaySerializer().fields["limitCents"]),
            help="Set today's limit in US cents (at most 6 decimal places).",
        )
        actions.add_argument(
            "--reset-today",
            action="store_true",
            help="Drop today's override: back to AI_DAILY_BUDGET_CENTS.",
        )
        actions.add_argument(
            "--pause", action="store_true", help="Pause AI until resumed or reset."
        )
        actions.add_argument("--resume", action="store_true", help="Resume AI.")
        actions.add_argument(
            "--close-provider-breaker", action="store_true", help="Close the provider breaker now."
        )

    def handle(self, *args, **options):
        if options["set_today"] is not None:
            budget.budget_limit_set(limit_cents=options["set_today"])
            self.stdout.write(f"Today's budget set to {options['set_today'].normalize():f} cents.")
        elif options["reset_today"]:
            budget.budget_limit_set(limit_cents=None)
            self.stdout.write("Today's budget follows AI_DAILY_BUDGET_CENTS again.")
        elif options["pause"]:
            budget.budget_pause()
            self.stdout.write("AI paused until resumed or the daily reset.")
        elif options["resume"]:
            if budget.budget_resume():
                self.stdout.write("AI resumed.")
            else:
                self.stdout.write("AI was not paused.")
        elif options["close_provider_breaker"]:
            breaker.provider_breaker_reset()
            self.stdout.write("Provider breaker closed.")
        self._show()

    def _show(self) -> None:
        status = selectors.circuit_breaker_status()
        provider = status["providerBreaker"]
        source = "set by staff" if status["budgetOverridden"] else "AI_DAILY_BUDGET_CENTS"
        lines = [
            f"Budget day   {status['day']} ({status['timezone']}), resets at "
            f"{status['resetsAt'].isoformat()}",
            f"Breaker      {status['state']}" + (" (paused by staff)" if status["paused"] else ""),
            f"Limit        {status['budgetCents']} cents ({source})",
            f"Spent        {status['dailySpendCents']} cents ({status['percentUsed']} %)",
            f"Reserved     {status['reservedCents']} cents",
            f"Remaining    {status['remainingCents']} cents",
            f"Operations   {status['operationCount']}",
            f"Provider     {provider['state']}, {provider['consecutiveFailures']} consecutive "
            "failure(s)"
            + (f", since {provider['since'].isoformat()}" if provider["since"] else ""),
        ]
        for line in lines:
            self.stdout.write(line)
