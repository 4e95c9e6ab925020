from django.apps import AppConfig


class EnrichmentConfig(AppConfig):
    name = "enrichment"
    verbose_name = "Enrichment"

    def ready(self) -> None:
        from django.core.signals import setting_changed
        from django.db.models.signals import post_migrate

        from . import receivers  # noqa: F401 - connects the memory signal
        from .providers import reset_provider_cache

        def _provider_settings_changed(setting, **kwargs):
            if setting in ("AI_PROVIDER", "EMBEDDING_DIMENSIONS") or setting.startswith("OPENAI_"):
                reset_provider_cache()

        setting_changed.connect(_provider_settings_changed, weak=False)
        post_migrate.connect(_search_index_ensure, sender=self, weak=False)


def _search_index_ensure(sender, using="default", **kwargs) -> None:
    """After every migrate (deploys, make run): an HNSW index for the active embedding model."""
    from memories.search import embedding_index_ensure

    from .providers import get_provider

    provider = get_provider()
    if provider.embedding_dimensions:
        embedding_index_ensure(
            model=provider.embedding_model, dimensions=provider.embedding_dimensions, using=using
        )
