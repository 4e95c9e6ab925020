import math

import pytest
from django.core.exceptions import ImproperlyConfigured

from enrichment.providers import CATEGORIES, ProviderError, get_provider, reset_provider_cache
from enrichment.providers.base import estimate_tokens, truncate_to_tokens
from enrichment.providers.local import DIMENSIONS, LocalProvider


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_local_provider_is_deterministic_and_normalised():
    provider = LocalProvider()
    first = provider.embed("Dentist appointment on Monday at 9")
    second = provider.embed("Dentist appointment on Monday at 9")
    assert first.vector == second.vector
    assert first.dimensions == DIMENSIONS
    assert math.isclose(math.sqrt(sum(v * v for v in first.vector)), 1.0, abs_tol=1e-5)


def test_the_local_provider_puts_similar_texts_close():
    provider = LocalProvider()
    a = provider.embed("Book a table at the Italian restaurant for dinner").vector
    b = provider.embed("Dinner at the Italian restaurant, book a table").vector
    c = provider.embed("Quarterly tax return is due to the bank").vector
    assert cosine(a, b) > 0.8
    assert cosine(a, b) > cosine(a, c) + 0.4


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Dentist appointment on Monday", "health"),
        ("Pay the rent and the electricity bill", "finance"),
        ("Flight to Lisbon, hotel booked near the beach", "travel"),
        ("Standup meeting moved, project deadline Friday", "work"),
        ("zzz qqq", "other"),
    ],
)
def test_the_local_provider_classifies_by_rules(text, category):
    result = LocalProvider().classify(text)
    assert result.category == category
    assert result.category in CATEGORIES
    assert len(result.tags) <= 5
    assert result.usage.input_tokens >= 1


def test_token_estimates_are_conservative_and_truncation_respects_them():
    assert estimate_tokens("hello world") >= 2
    assert estimate_tokens("日本語のテキスト") >= 8  # one token per CJK character or more
    long = "é" * 10_000
    cut = truncate_to_tokens(long, 100)
    assert estimate_tokens(cut) <= 100
    assert long.startswith(cut)


def test_local_is_the_default_without_a_key(settings):
    settings.AI_PROVIDER = "local"
    assert get_provider().name == "local"


def test_openai_without_a_key_is_a_start_up_error(monkeypatch):
    import importlib

    import memoryconnector.settings.base as base

    monkeypatch.setenv("AI_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(ImproperlyConfigured, match="OPENAI_API_KEY"):
        importlib.reload(base)
    monkeypatch.delenv("AI_PROVIDER")
    importlib.reload(base)


def test_the_openai_provider_classifies_and_embeds_through_the_real_client(use_openai):
    provider = get_provider()
    assert provider.name == "openai"
    result = provider.classify("Dentist appointment on Monday")
    assert result.category == "health"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    embedding = provider.embed("Dentist appointment on Monday")
    assert embedding.dimensions == 16
    chat = use_openai.calls_to("/v1/chat/completions")[0]
    assert chat["authorization"] == "Bearer sk-test-0123456789abcdef"
    assert chat["body"]["model"] == "gpt-4o-mini"
    assert chat["body"]["response_format"]["type"] == "json_schema"
    schema = chat["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["category"]["enum"] == list(CATEGORIES)
    assert use_openai.calls_to("/v1/embeddings")[0]["body"]["model"] == "text-embedding-3-small"


def test_the_openai_provider_reads_cached_tokens(use_openai):
    use_openai.state.cached_tokens = 32
    result = get_provider().classify("A note long enough " * 20)
    assert result.usage.cached_tokens == 32


def test_the_openai_provider_sends_dimensions_when_configured(use_openai, settings):
    settings.EMBEDDING_DIMENSIONS = 8
    reset_provider_cache()
    assert get_provider().embed("x").dimensions == 8
    assert use_openai.calls_to("/v1/embeddings")[0]["body"]["dimensions"] == 8


def test_it_sends_no_dimensions_to_a_model_that_does_not_take_them(use_openai, settings):
    settings.OPENAI_EMBEDDING_MODEL = "nomic-embed-text"
    reset_provider_cache()
    get_provider().embed("x")
    assert "dimensions" not in use_openai.calls_to("/v1/embeddings")[0]["body"]


def test_the_openai_provider_truncates_text_over_the_model_limit(use_openai, settings):
    settings.OPENAI_EMBEDDING_MAX_INPUT_TOKENS = 50
    get_provider().embed("word " * 1000)
    sent = use_openai.calls_to("/v1/embeddings")[0]["body"]["input"]
    assert estimate_tokens(sent) <= 50


@pytest.mark.parametrize(
    ("mode", "retryable", "retry_after"),
    [("429", True, 1.0), ("500", True, None), ("slow", True, None), ("malformed", True, None),
     ("bad_content", True, None), ("401", False, None), ("400", False, None)],
)  # fmt: skip
def test_the_openai_provider_maps_errors(use_openai, mode, retryable, retry_after):
    use_openai.state.slow_seconds = 2.0
    use_openai.script([mode])
    with pytest.raises(ProviderError) as caught:
        get_provider().classify("hello")
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after
    assert "sk-test" not in str(caught.value)
