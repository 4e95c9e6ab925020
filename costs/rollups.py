"""Keep the daily roll-ups (ai_cost_daily) equal to the ledger: every ledger row written
through the ORM is added in its own transaction (and subtracted if ever deleted). Bulk imports
that bypass the ORM call `services.cost_totals_rebuild()`."""

from __future__ import annotations

from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import AICostRecord, DailyCostTotal
from .money import cents_value


def _apply(record: AICostRecord, sign: int) -> None:
    key = {
        "day": record.day,
        "operation": record.operation,
        "provider": record.provider,
        "model": record.model,
    }
    changes = {
        "count": F("count") + sign,
        "input_tokens": F("input_tokens") + sign * record.input_tokens,
        "cached_tokens": F("cached_tokens") + sign * record.cached_tokens,
        "output_tokens": F("output_tokens") + sign * record.output_tokens,
        "cost_cents": F("cost_cents") + cents_value(sign * record.cost_cents),
    }
    rows = DailyCostTotal.objects.filter(**key)
    if not rows.update(**changes):
        # The day's first call of this kind (or another worker created the row just now).
        DailyCostTotal.objects.bulk_create([DailyCostTotal(**key)], ignore_conflicts=True)
        rows.update(**changes)


@receiver(post_save, sender=AICostRecord, dispatch_uid="costs.rollup_add")
def _ledger_row_added(sender, instance: AICostRecord, created: bool, raw: bool = False, **kw):
    if created and not raw:
        _apply(instance, +1)


@receiver(post_delete, sender=AICostRecord, dispatch_uid="costs.rollup_remove")
def _ledger_row_removed(sender, instance: AICostRecord, **kw):
    _apply(instance, -1)
