"""Keep the daily roll-ups (ai_cost_daily) equal to the ledger: every ledger row written
through the ORM is added in its own transaction (and subtracted if ever deleted); rows written in
bulk by the budget's settle are added by `ledger_rows_counted` in theirs. Bulk imports that
bypass both call `budget.cost_totals_rebuild()`."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import AICostRecord, DailyCostTotal
from .money import ZERO, cents_value


def _apply(record: AICostRecord, sign: int) -> None:
    _add(
        day=record.day,
        operation=record.operation,
        provider=record.provider,
        model=record.model,
        count=sign,
        input_tokens=sign * record.input_tokens,
        cached_tokens=sign * record.cached_tokens,
        output_tokens=sign * record.output_tokens,
        cost_cents=sign * record.cost_cents,
    )


def _add(*, day, operation, provider, model, count, input_tokens, cached_tokens, output_tokens,
         cost_cents) -> None:  # fmt: skip
    key = {"day": day, "operation": operation, "provider": provider, "model": model}
    changes = {
        "count": F("count") + count,
        "input_tokens": F("input_tokens") + input_tokens,
        "cached_tokens": F("cached_tokens") + cached_tokens,
        "output_tokens": F("output_tokens") + output_tokens,
        "cost_cents": F("cost_cents") + cents_value(cost_cents),
    }
    rows = DailyCostTotal.objects.filter(**key)
    if not rows.update(**changes):
        # The day's first call of this kind (or another worker created the row just now).
        DailyCostTotal.objects.bulk_create([DailyCostTotal(**key)], ignore_conflicts=True)
        rows.update(**changes)


def ledger_rows_counted(records: list[AICostRecord]) -> None:
    """Ledger rows written with bulk_create (which sends no signals): add them to the roll-ups,
    one UPDATE per (day, operation, provider, model), in the writing transaction."""
    groups: dict[tuple, list[AICostRecord]] = defaultdict(list)
    for record in records:
        groups[(record.day, record.operation, record.provider, record.model)].append(record)
    for (day, operation, provider, model), rows in sorted(groups.items()):
        _add(
            day=day,
            operation=operation,
            provider=provider,
            model=model,
            count=len(rows),
            input_tokens=sum(r.input_tokens for r in rows),
            cached_tokens=sum(r.cached_tokens for r in rows),
            output_tokens=sum(r.output_tokens for r in rows),
            cost_cents=sum((r.cost_cents for r in rows), ZERO),
        )


@receiver(post_save, sender=AICostRecord, dispatch_uid="costs.rollup_add")
def _ledger_row_added(sender, instance: AICostRecord, created: bool, raw: bool = False, **kw):
    if created and not raw:
        _apply(instance, +1)


@receiver(post_delete, sender=AICostRecord, dispatch_uid="costs.rollup_remove")
def _ledger_row_removed(sender, instance: AICostRecord, **kw):
    _apply(instance, -1)
