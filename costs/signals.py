"""Signals the costs app sends, so that alerting (or anything else) can react without costs
knowing who listens. All are sent after the transaction that caused them commits, with
`send_robust`: a failing receiver is logged and never undoes or breaks the AI call's bookkeeping.
"""

from django.dispatch import Signal

# Once per budget day per threshold (AI_BUDGET_ALERT_THRESHOLDS), across all processes, in
# ascending order. kwargs: day (date), percent (int, e.g. 50, 75, 100), spent_cents (Decimal),
# limit_cents (Decimal). Sender: costs.models.DailyBudget.
budget_threshold_crossed = Signal()

# Once per user per budget day per limit. kwargs: user_id (int), limit ("memories" |
# "enrichments" | "cost"), day (date). Sender: costs.models.UserUsage.
user_limit_reached = Signal()

# When the budget breaker of a day changes state. kwargs: day (date), state ("open" | "closed"),
# reason ("exhausted" | "paused" | "resumed" | "limit_changed"). Sender: DailyBudget.
budget_breaker_changed = Signal()

# When the provider breaker changes state. kwargs: state ("closed" | "open" | "half_open"),
# previous (str), consecutive_failures (int). Sender: costs.models.ProviderBreaker.
provider_breaker_changed = Signal()
