from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_empty_price_table(sender, apps=None, using="default", **kwargs) -> None:
    """An empty price table would price every call by the fallback: seed it from the data file.
    Migration 0002 seeds it first; this refills it after a flush (test isolation, `flush`)."""
    from django.db import connections

    from .prices import prices_load

    try:
        model = (apps or sender.apps).get_model("costs", "ModelPrice")
    except LookupError:
        return
    if model._meta.db_table not in connections[using].introspection.table_names():
        return
    if not model.objects.using(using).exists():
        prices_load(model_class=model)


class CostsConfig(AppConfig):
    name = "costs"
    verbose_name = "AI costs and budget"

    def ready(self) -> None:
        from . import (
            pricing,  # noqa: F401 - forgets the cached price table when staff edit it
            rollups,  # noqa: F401 - keeps the daily roll-ups equal to the ledger
        )

        post_migrate.connect(_seed_empty_price_table, sender=self)
        _connect_alerts()


def _connect_alerts() -> None:
    """Alerts for what the costs app announces: budget thresholds, users' limits, the provider
    breaker (costs.alerts)."""
    from . import alerts, signals

    signals.budget_threshold_crossed.connect(
        alerts.budget_threshold_alert, dispatch_uid="costs.alerts.budget_threshold"
    )
    signals.user_limit_reached.connect(
        alerts.user_limit_alert, dispatch_uid="costs.alerts.user_limit_reached"
    )
    signals.provider_breaker_changed.connect(
        alerts.provider_breaker_alert, dispatch_uid="costs.alerts.provider_breaker"
    )
