from django.apps import AppConfig


class MemoriesConfig(AppConfig):
    name = "memories"
    verbose_name = "Memories"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_search_schema_ensure, sender=self, weak=False)


def _search_schema_ensure(sender, using="default", **kwargs) -> None:
    """After every migrate: the keyword-search trigger in the SEARCH_LANGUAGE configuration."""
    from .search import search_schema_ensure

    search_schema_ensure(using=using)
