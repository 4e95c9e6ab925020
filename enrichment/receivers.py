"""Enrichment follows memories and costs through their signals: neither imports enrichment."""

from django.dispatch import receiver

from costs.budget import Refusal
from costs.signals import budget_breaker_changed, budget_room_freed
from memories.services import memory_text_changed

from . import services


@receiver(memory_text_changed, dispatch_uid="enrichment.job_for_new_text")
def _job_for_new_text(sender, memory, created=False, **kwargs):
    services.job_create_for_memory(memory=memory, created=created)


@receiver(budget_breaker_changed, dispatch_uid="enrichment.wake_on_budget_closed")
def _wake_on_budget_closed(sender, state, **kwargs):
    # Resumed, or today's limit raised: what waited for the budget runs now, not at the reset.
    if state == "closed":
        services.jobs_wake(reasons=(*Refusal.BUDGET, Refusal.BUDGET_RESERVED))


@receiver(budget_room_freed, dispatch_uid="enrichment.wake_on_room_freed")
def _wake_on_room_freed(sender, **kwargs):
    # A call in flight settled or was released: the calls refused for want of its hold retry.
    services.jobs_wake(reasons=(Refusal.BUDGET_RESERVED,))
