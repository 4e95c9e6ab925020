from django.apps import AppConfig


class EnrichmentConfig(AppConfig):
    name = "enrichment"
    verbose_name = "Enrichment"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import receivers  # noqa: F401 - connects the memory signal
        from .providers import reset_provider_cache

        def _provider_settings_changed(setting, **kwargs):
            if setting == "AI_PROVIDER" or setting.startswith("OPENAI_"):
                reset_provider_cache()

        setting_changed.connect(_provider_settings_changed, weak=False)
