"""Signals the costs app sends, so that alerting (or anything else) can react without costs
knowing who listens. All are sent after the transaction that caused them commits, with
`send_robust`: a failing receiver is logged and never undoes or breaks the AI call's bookkeeping.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)


def send_on_commit(signal: Signal, sender, **kwargs) -> None:
    """Send `signal` robustly once the current transaction commits (at once outside one)."""

    def send() -> None:
        for receiver, result in signal.send_robust(sender=sender, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "receiver %r of a costs signal failed: %r",
                    receiver,
                    result,
                    exc_info=(type(result), result, result.__traceback__),
                )

    transaction.on_commit(send)


# Once per budget day per threshold (AI_BUDGET_ALERT_THRESHOLDS), across all processes, in
# ascending order. kwargs: day (date), percent (int, e.g. 50, 75, 100), spent_cents (Decimal),
# limit_cents (Decimal), exhausted (bool: the budget was declared exhausted, so 100 % may be
# announced below the limit). Sender: costs.models.DailyBudget.
budget_threshold_crossed = Signal()

# Once per user per budget day per limit. kwargs: user_id (int), limit ("memories" |
# "enrichments" | "cost"), day (date). Sender: costs.models.UserUsage.
user_limit_reached = Signal()

# When the budget breaker of a day changes state. kwargs: day (date), state ("open" | "closed"),
# reason ("budget_exhausted" | "budget_paused" | "paused" | "resumed" | "limit_changed").
# Sender: DailyBudget.
budget_breaker_changed = Signal()

# Budget held by calls in flight was given back (settled or released) after a call had been
# refused for want of it: refused work may try again now. kwargs: day (date). Sender: DailyBudget.
budget_room_freed = Signal()

# When the provider breaker changes state. kwargs: state ("closed" | "open" | "half_open"),
# previous (str), consecutive_failures (int). Sender: costs.models.ProviderBreaker.
provider_breaker_changed = Signal()
