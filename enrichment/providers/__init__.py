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
    "get_provider",
]


@lru_cache(maxsize=1)
def _build(name: str) -> Provider:
    if name == "openai":
        from .openai_provider import OpenAIProvider

        return OpenAIProvider()
    from .local import LocalProvider

    return LocalProvider()


def get_provider() -> Provider:
    return _build(settings.AI_PROVIDER)


def reset_provider_cache() -> None:
    """Tests and settings changes: build the provider again from current settings."""
    _build.cache_clear()
