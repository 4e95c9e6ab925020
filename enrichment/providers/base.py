"""The small interface every AI provider implements, and its result and error types."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

# The documented category set (README "Enrichment"); providers must answer one of these.
CATEGORIES = (
    "work",
    "personal",
    "health",
    "finance",
    "learning",
    "travel",
    "food",
    "shopping",
    "relationships",
    "entertainment",
    "ideas",
    "other",
)
MAX_TAGS = 5


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Classification:
    category: str
    tags: list[str]
    model: str
    usage: Usage


@dataclass(frozen=True)
class EmbeddingResult:
    vector: list[float]
    model: str
    usage: Usage
    dimensions: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "dimensions", len(self.vector))


class ProviderError(Exception):
    """A failed AI call. `retryable` errors (429, 5xx, timeouts) are tried again later.

    `rate_limited`: the provider asked us to slow down (429): not an outage, so it never counts
    toward opening the provider breaker, and `retry_after` says when to try again. `usage`: the
    tokens billed all the same (a malformed answer to a call that was made); `usage_shares`: for
    a request of several inputs, each input's share of it (as `embed_many` splits a good one)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        rate_limited: bool = False,
        usage: Usage | None = None,
        usage_shares: list[Usage] | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        self.usage = usage
        self.usage_shares = usage_shares

    def shares(self, count: int) -> list[Usage | None]:
        """What each of the request's `count` inputs was billed (None: nothing billed)."""
        if self.usage_shares is not None:
            return list(self.usage_shares)
        return [self.usage] if count == 1 else [None] * count


class Provider(Protocol):
    name: str
    classification_model: str
    embedding_model: str
    embedding_dimensions: int | None  # None: the model's own, known from its answers

    def classify(self, text: str) -> Classification: ...

    def embed(self, text: str) -> EmbeddingResult: ...

    def embed_many(self, texts: list[str]) -> list[EmbeddingResult]:
        """One request for all `texts`; each result carries its share of the usage."""
        ...

    def estimate_classification_tokens(self, text: str) -> Usage: ...

    def estimate_embedding_tokens(self, text: str) -> Usage: ...


def usage_split(total: Usage, weights: list[int]) -> list[Usage]:
    """Split a batched request's usage by each input's share (`weights`, e.g. its estimated
    tokens), so that the parts add up exactly to what the provider reported: each part gets the
    floor of its share, and the tokens left go to the largest remainders (ties to the first)."""
    if not weights:
        return []
    weights = [max(0, w) for w in weights]
    if not any(weights):
        weights = [1] * len(weights)

    def split(amount: int) -> list[int]:
        whole = sum(weights)
        parts = [amount * w // whole for w in weights]
        left = amount - sum(parts)
        order = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % whole), i))
        for i in order[:left]:
            parts[i] += 1
        return parts

    # Cached tokens are part of the input: split them and the rest apart, so each part's cached
    # tokens never exceed its input.
    uncached = split(total.input_tokens - total.cached_tokens)
    cached = split(total.cached_tokens)
    outputs = split(total.output_tokens)
    return [
        Usage(input_tokens=u + c, output_tokens=o, cached_tokens=c)
        for u, c, o in zip(uncached, cached, outputs, strict=True)
    ]


def estimate_tokens(text: str) -> int:
    """An upper estimate of a tokenizer's count: one token per 3 UTF-8 bytes, at least one.

    BPE tokenizers average ~4 bytes per token on English and ~3 on CJK, so this over-counts,
    which is the safe side for budget reservations and context limits."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """Cut `text` so that its estimate fits `max_tokens` (never mid-character)."""
    if estimate_tokens(text) <= max_tokens:
        return text
    return text.encode("utf-8")[: max_tokens * 3].decode("utf-8", errors="ignore")


def clean_tags(raw) -> list[str]:
    tags: list[str] = []
    for tag in raw if isinstance(raw, list) else []:
        if isinstance(tag, str):
            value = " ".join(tag.lower().split())[:40]
            if value and value not in tags:
                tags.append(value)
    return tags[:MAX_TAGS]
