"""The offline provider: rule-based classification and feature-hashing embeddings.

Deterministic, no downloads, no network. Similar texts share words and character trigrams, so
they land on similar vectors (cosine similarity), which is enough for "related memories"."""

from __future__ import annotations

import hashlib
import math
import re

from .base import Classification, EmbeddingResult, Usage, clean_tags, estimate_tokens

NAME = "local"
CLASSIFICATION_MODEL = "local-rules-v1"
EMBEDDING_MODEL = "local-hash-v1"
DIMENSIONS = 256

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# category -> keywords (stems match word prefixes)
_RULES: dict[str, tuple[str, ...]] = {
    "work": ("meeting", "deadline", "project", "client", "office", "boss", "colleague",
             "report", "email", "standup", "deploy", "sprint", "manager", "presentation"),
    "health": ("doctor", "dentist", "gym", "run", "workout", "medicine", "pill", "sleep",
               "headache", "hospital", "health", "yoga", "diet", "therapy"),
    "finance": ("bank", "money", "budget", "invoice", "tax", "salary", "rent", "bill",
                "payment", "invest", "loan", "insurance", "mortgage", "pay"),
    "learning": ("learn", "course", "book", "read", "study", "lecture", "tutorial", "class",
                 "exam", "language", "research", "paper"),
    "travel": ("flight", "hotel", "trip", "travel", "airport", "train", "passport", "visa",
               "vacation", "holiday", "beach", "parked", "parking"),
    "food": ("recipe", "dinner", "lunch", "breakfast", "restaurant", "cook", "coffee",
             "eat", "meal", "pizza", "bake"),
    "shopping": ("buy", "bought", "shop", "order", "store", "groceries", "milk", "amazon",
                 "purchase", "return"),
    "relationships": ("mom", "dad", "friend", "birthday", "wife", "husband", "partner",
                      "family", "kids", "sister", "brother", "anniversary", "wedding"),
    "entertainment": ("movie", "film", "music", "concert", "game", "show", "series",
                      "podcast", "netflix", "album", "song"),
    "ideas": ("idea", "maybe", "could", "startup", "invent", "brainstorm", "what if"),
}  # fmt: skip
_STOPWORDS = frozenset(
    "the a an and or but to of in on at for with from by is are was were be been it this that "
    "i me my we our you your he she they them his her its as not no do did have has had will "
    "would should can just so then than there here about into up out over".split()
)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def classify(text: str) -> Classification:
    words = _words(text)
    lowered = " ".join(words)
    scores: dict[str, int] = {}
    for category, keywords in _RULES.items():
        score = sum(
            1
            for keyword in keywords
            if (" " in keyword and keyword in lowered)
            or any(word.startswith(keyword) for word in words)
        )
        if score:
            scores[category] = score
    # Highest score wins; ties go to the earlier category in _RULES (stable, deterministic).
    category = max(scores, key=lambda c: (scores[c], -list(_RULES).index(c)), default="other")
    counts: dict[str, int] = {}
    for word in words:
        if len(word) > 3 and word not in _STOPWORDS and not word.isdigit():
            counts[word] = counts.get(word, 0) + 1
    tags = sorted(counts, key=lambda w: (-counts[w], words.index(w)))
    tokens = estimate_tokens(text)
    return Classification(
        category=category,
        tags=clean_tags(tags),
        model=CLASSIFICATION_MODEL,
        usage=Usage(input_tokens=tokens, output_tokens=min(20, 3 + len(tags))),
    )


def _features(text: str) -> list[str]:
    words = _words(text)
    features = [f"w:{w}" for w in words]
    for word in words:
        padded = f"^{word}$"
        features += [f"t:{padded[i : i + 3]}" for i in range(max(1, len(padded) - 2))]
    return features


def embed(text: str) -> EmbeddingResult:
    vector = [0.0] * DIMENSIONS
    for feature in _features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % DIMENSIONS
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[index] += sign * (2.0 if feature.startswith("w:") else 1.0)
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return EmbeddingResult(
        vector=[round(v / norm, 6) for v in vector],
        model=EMBEDDING_MODEL,
        usage=Usage(input_tokens=estimate_tokens(text)),
    )


class LocalProvider:
    name = NAME
    classification_model = CLASSIFICATION_MODEL
    embedding_model = EMBEDDING_MODEL
    embedding_dimensions = DIMENSIONS

    def classify(self, text: str) -> Classification:
        return classify(text)

    def embed(self, text: str) -> EmbeddingResult:
        return embed(text)

    def embed_many(self, texts: list[str]) -> list[EmbeddingResult]:
        return [embed(text) for text in texts]

    def estimate_classification_tokens(self, text: str) -> Usage:
        return Usage(input_tokens=estimate_tokens(text), output_tokens=20)

    def estimate_embedding_tokens(self, text: str) -> Usage:
        return Usage(input_tokens=estimate_tokens(text))
