"""The OpenAI provider, through the official client; any OpenAI-compatible server works
(OPENAI_BASE_URL: Ollama, vLLM, a LiteLLM proxy, our test stub)."""

from __future__ import annotations

import array
import base64
import binascii
import datetime as dt
import email.utils
import json
import logging
import re
import sys

import openai
from django.conf import settings

from .base import (
    CATEGORIES,
    MAX_TAGS,
    Classification,
    EmbeddingResult,
    ProviderError,
    Usage,
    clean_tags,
    estimate_tokens,
    truncate_to_tokens,
    usage_split,
)

logger = logging.getLogger(__name__)

NAME = "openai"
CLASSIFICATION_MAX_OUTPUT_TOKENS = 120
# Tokens of instructions and schema sent with every classification, on top of the text.
CLASSIFICATION_PROMPT_OVERHEAD_TOKENS = 160

SYSTEM_PROMPT = (
    "You classify a person's short personal note. Answer with JSON only: the single best "
    f"category from the list, and up to {MAX_TAGS} short lowercase topic tags."
)

CLASSIFICATION_SCHEMA = {
    "name": "memory_classification",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": list(CATEGORIES)},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_TAGS},
        },
        "required": ["category", "tags"],
        "additionalProperties": False,
    },
}


def _usage(raw) -> Usage:
    if raw is None:
        raise ProviderError("the response carried no usage", retryable=True)
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(
        input_tokens=int(raw.prompt_tokens or 0),
        output_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
        cached_tokens=int(cached),
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s"."""
    parts = _DURATION_PART.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(number) * _DURATION_SECONDS[unit] for number, unit in parts)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """How long the provider asked us to wait, in seconds: `retry-after-ms`, `retry-after`
    (seconds or an HTTP date), else the later of the `x-ratelimit-reset-*` durations."""
    headers = exc.response.headers if exc.response is not None else {}
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    resets = [
        _duration(headers[name])
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if headers.get(name)
    ]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


def _translate(exc: Exception) -> ProviderError:
    """Map the client's errors onto retryable or final ones; the message never holds the key."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection failed", retryable=True)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(
            "429 rate limited", retryable=True, retry_after=_retry_after(exc), rate_limited=True
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"{status} {type(exc).__name__}"
        if status in (408, 409) or status >= 500:
            return ProviderError(message, retryable=True, retry_after=_retry_after(exc))
        return ProviderError(message, retryable=False)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        return ProviderError("malformed response", retryable=True)
    return ProviderError(f"{type(exc).__name__}", retryable=True)


def _vector(embedding) -> list[float]:
    """An embedding as floats: base64 little-endian float32 (what we ask for), or a list of
    numbers (what a compatible server may answer all the same)."""
    if isinstance(embedding, str):
        values = array.array("f", base64.b64decode(embedding, validate=True))
        if sys.byteorder == "big":
            values.byteswap()
        return values.tolist()
    return [float(v) for v in embedding]


def embedding_dimensions_for(model: str) -> int | None:
    """EMBEDDING_DIMENSIONS for the text-embedding-3 family, the only one that accepts
    `dimensions`; None for others, which answer their own size."""
    return settings.EMBEDDING_DIMENSIONS if model.startswith("text-embedding-3") else None


class OpenAIProvider:
    name = NAME

    def __init__(self) -> None:
        self.classification_model = settings.OPENAI_CLASSIFICATION_MODEL
        self.embedding_model = settings.OPENAI_EMBEDDING_MODEL
        self.dimensions = embedding_dimensions_for(self.embedding_model)
        self.embedding_dimensions = self.dimensions  # None: known from the first answer
        self.client = openai.OpenAI(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.OPENAI_TIMEOUT_SECONDS,
            # Retries belong to the job (backoff, budget, breaker), not to the HTTP client.
            max_retries=0,
        )

    def _text_for_classification(self, text: str) -> str:
        return truncate_to_tokens(text, settings.OPENAI_CLASSIFICATION_MAX_INPUT_TOKENS)

    def _text_for_embedding(self, text: str) -> str:
        return truncate_to_tokens(text, settings.OPENAI_EMBEDDING_MAX_INPUT_TOKENS)

    def estimate_classification_tokens(self, text: str) -> Usage:
        prompt = estimate_tokens(self._text_for_classification(text))
        return Usage(
            input_tokens=prompt + CLASSIFICATION_PROMPT_OVERHEAD_TOKENS,
            output_tokens=CLASSIFICATION_MAX_OUTPUT_TOKENS,
        )

    def estimate_embedding_tokens(self, text: str) -> Usage:
        return Usage(input_tokens=estimate_tokens(self._text_for_embedding(text)))

    def classify(self, text: str) -> Classification:
        try:
            response = self.client.chat.completions.create(
                model=self.classification_model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": self._text_for_classification(text)},
                ],
                response_format={"type": "json_schema", "json_schema": CLASSIFICATION_SCHEMA},
                max_completion_tokens=CLASSIFICATION_MAX_OUTPUT_TOKENS,
                temperature=0,
            )
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise _translate(exc) from exc
        usage = _usage(getattr(response, "usage", None))
        try:
            content = response.choices[0].message.content or ""
            data = json.loads(content)
            category = data["category"]
        except (IndexError, AttributeError, TypeError, KeyError, ValueError) as exc:
            # The call was made and is billed.
            raise ProviderError("malformed classification", retryable=True, usage=usage) from exc
        if category not in CATEGORIES:
            logger.warning("provider answered an unknown category; using 'other'")
            category = "other"
        return Classification(
            category=category,
            tags=clean_tags(data.get("tags")),
            model=getattr(response, "model", None) or self.classification_model,
            usage=usage,
        )

    def embed(self, text: str) -> EmbeddingResult:
        return self.embed_many([text])[0]

    def embed_many(self, texts: list[str]) -> list[EmbeddingResult]:
        """One embeddings request for all `texts` (the API takes a list); each result gets its
        share of the request's usage by its estimated tokens (usage_split: exact in sum)."""
        kwargs = {"dimensions": self.dimensions} if self.dimensions else {}
        sent = [self._text_for_embedding(text) for text in texts]
        try:
            response = self.client.embeddings.create(
                model=self.embedding_model,
                input=sent[0] if len(sent) == 1 else sent,
                # base64 float32, as the official client asks by default: a tenth of the CPU of
                # parsing JSON floats.
                encoding_format="base64",
                **kwargs,
            )
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise _translate(exc) from exc
        usage = _usage(getattr(response, "usage", None))
        shares = usage_split(usage, [estimate_tokens(text) for text in sent])
        try:
            data = sorted(response.data, key=lambda item: item.index)
            vectors = [_vector(item.embedding) for item in data]
        except (AttributeError, TypeError, ValueError, binascii.Error) as exc:
            raise ProviderError(
                "malformed embedding", retryable=True, usage=usage, usage_shares=shares
            ) from exc
        if len(vectors) != len(sent) or not all(vectors):
            raise ProviderError(
                "empty or missing embedding", retryable=True, usage=usage, usage_shares=shares
            )
        model = getattr(response, "model", None) or self.embedding_model
        return [
            EmbeddingResult(vector=vector, model=model, usage=share)
            for vector, share in zip(vectors, shares, strict=True)
        ]
