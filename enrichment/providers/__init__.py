"""Choosing the AI provider: AI_PROVIDER=openai|local (local when no OPENAI_API_KEY)."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from .base import (
    CATEGORIES,
    Classification,
    EmbeddingResult,
    Provider,
    ProviderError,
    Usage,
)

__all__ = [
    "CATEGORIES",
    "Classification",
    "EmbeddingResult",
    "Provider",
    "ProviderError",
    "Usage",
    "active_embedding",
    "get_provider",
]


@lru_cache(maxsize=1)
def _build(name: str) -> Provider:
    if name == "openai":
        from .openai_provider import OpenAIProvider

        return OpenAIProvider()
    from .local import LocalProvider

    return LocalProvider()


def active_embedding() -> tuple[str, int | None]:
    """The active provider's embedding model and dimensions (None: the model's own), read from
    the settings without building a client."""
    if settings.AI_PROVIDER == "openai":
        from .openai_provider import embedding_dimensions_for

        model = settings.OPENAI_EMBEDDING_MODEL
        return model, embedding_dimensions_for(model)
    from .local import DIMENSIONS, EMBEDDING_MODEL

    return EMBEDDING_MODEL, DIMENSIONS


def get_provider() -> Provider:
    return _build(settings.AI_PROVIDER)


def reset_provider_cache() -> None:
    """Tests and settings changes: build the provider again from current settings."""
    _build.cache_clear()
