"""Wire shapes of the memories API (camelCase, as the reference API)."""

from django.conf import settings
from rest_framework import serializers

from common.serializers import QuerySerializer, StrictCharField, StrictSerializer

from .models import EnrichmentStatus, MemoryType


# A plain Serializer with every field declared, as the ModelSerializer it replaces built them (the
# same wire shape and schema) but once per class instead of once per instance: it answers every
# create.
class MemorySerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    textContent = serializers.CharField(source="text_content")  # noqa: N815
    type = serializers.ChoiceField(choices=MemoryType.choices, read_only=True)
    category = serializers.CharField(read_only=True)
    tags = serializers.ListField(child=serializers.CharField())
    enrichmentStatus = serializers.ChoiceField(  # noqa: N815
        source="enrichment_status", choices=EnrichmentStatus.choices
    )
    createdAt = serializers.DateTimeField(source="created_at")  # noqa: N815
    updatedAt = serializers.DateTimeField(source="updated_at")  # noqa: N815
    enrichedAt = serializers.DateTimeField(source="enriched_at", allow_null=True)  # noqa: N815


def _text_field(**kwargs) -> StrictCharField:
    return StrictCharField(
        min_length=1,
        max_length=settings.MEMORY_MAX_CHARS,
        help_text=f"1 to {settings.MEMORY_MAX_CHARS} characters.",
        **kwargs,
    )


class MemoryCreateSerializer(StrictSerializer):
    textContent = _text_field()  # noqa: N815
    type = serializers.ChoiceField(choices=MemoryType.choices, default=MemoryType.NOTE)


class MemoryUpdateSerializer(StrictSerializer):
    textContent = _text_field(required=False)  # noqa: N815
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)


class MemoryListQuerySerializer(QuerySerializer):
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    enrichmentStatus = serializers.ChoiceField(  # noqa: N815
        choices=EnrichmentStatus.choices, required=False
    )
    createdAfter = serializers.DateTimeField(required=False)  # noqa: N815
    createdBefore = serializers.DateTimeField(required=False)  # noqa: N815
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False)
    cursor = serializers.CharField(
        required=False,
        max_length=500,
        help_text="The opaque position from a page's `next` or `previous` link; 400 if invalid.",
    )


SEARCH_MODES = ("hybrid", "semantic", "keyword")


class MemorySearchQuerySerializer(QuerySerializer):
    q = StrictCharField(min_length=1, max_length=1000, help_text="1 to 1000 characters.")
    mode = serializers.ChoiceField(choices=SEARCH_MODES, default="hybrid")
    limit = serializers.IntegerField(min_value=1, max_value=50, default=10)
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    category = serializers.CharField(required=False, max_length=32)
    tag = serializers.CharField(required=False, max_length=40)
    createdAfter = serializers.DateTimeField(required=False)  # noqa: N815
    createdBefore = serializers.DateTimeField(required=False)  # noqa: N815


class MemoryRelatedQuerySerializer(QuerySerializer):
    limit = serializers.IntegerField(min_value=1, max_value=50, default=10)


class _SemanticExplainSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    similarity = serializers.FloatField(help_text="Cosine similarity, -1 to 1.")


class _KeywordExplainSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    score = serializers.FloatField(help_text="PostgreSQL ts_rank_cd.")


class _ExplainSerializer(serializers.Serializer):
    semantic = _SemanticExplainSerializer(allow_null=True)
    keyword = _KeywordExplainSerializer(allow_null=True)


class SearchHitSerializer(serializers.Serializer):
    memory = MemorySerializer()
    score = serializers.FloatField(
        help_text="hybrid: the reciprocal-rank-fusion score (k = 60); semantic: the cosine "
        "similarity; keyword: ts_rank_cd."
    )
    explain = serializers.SerializerMethodField()

    def get_explain(self, hit) -> _ExplainSerializer:
        return {"semantic": hit.semantic, "keyword": hit.keyword}


class MemorySearchSerializer(serializers.Serializer):
    query = serializers.CharField()
    mode = serializers.ChoiceField(choices=SEARCH_MODES)
    degraded = serializers.ChoiceField(
        choices=("budget", "provider", "user_limit"),
        allow_null=True,
        help_text="Why semantic search was left out (then the results are keyword only).",
    )
    results = SearchHitSerializer(many=True, source="hits")


class MemoryRelatedSerializer(serializers.Serializer):
    results = SearchHitSerializer(many=True)
