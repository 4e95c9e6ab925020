"""Wire shapes of the memories API (camelCase, as the reference API)."""

from django.conf import settings
from rest_framework import serializers

from common.serializers import QuerySerializer, StrictCharField, StrictSerializer

from .models import EnrichmentStatus, Memory, MemoryType


class MemorySerializer(serializers.ModelSerializer):
    textContent = serializers.CharField(source="text_content")  # noqa: N815
    tags = serializers.ListField(child=serializers.CharField())
    enrichmentStatus = serializers.ChoiceField(  # noqa: N815
        source="enrichment_status", choices=EnrichmentStatus.choices
    )
    createdAt = serializers.DateTimeField(source="created_at")  # noqa: N815
    updatedAt = serializers.DateTimeField(source="updated_at")  # noqa: N815
    enrichedAt = serializers.DateTimeField(source="enriched_at", allow_null=True)  # noqa: N815

    class Meta:
        model = Memory
        fields = [
            "id",
            "textContent",
            "type",
            "category",
            "tags",
            "enrichmentStatus",
            "createdAt",
            "updatedAt",
            "enrichedAt",
        ]
        read_only_fields = fields


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
