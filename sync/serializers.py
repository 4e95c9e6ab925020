"""Wire shapes of the sync endpoints: query parameters, and the OpenAPI description of the
WatermelonDB changes objects (raw records use the client schema's snake_case columns)."""

from __future__ import annotations

import json

from rest_framework import serializers

from common.serializers import QuerySerializer

from .records import TABLE

# Cursors are JavaScript numbers on the device: integers up to 2**53 - 1.
MAX_CURSOR = 2**53 - 1


class _NullableInteger(serializers.IntegerField):
    """An integer query parameter that WatermelonDB may send as the word `null`."""

    def run_validation(self, data=serializers.empty):
        if data == "null":
            return None
        if isinstance(data, str) and not data.lstrip("-").isdigit():
            self.fail("invalid")
        return super().run_validation(data)


class PullQuerySerializer(QuerySerializer):
    last_pulled_at = _NullableInteger(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_CURSOR,
        help_text="The `timestamp` of your last pull; absent, `null` or 0 for a first sync.",
    )
    schema_version = _NullableInteger(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=10_000,
        help_text="Your local schema version.",
    )
    migration = serializers.CharField(
        required=False,
        allow_blank=False,
        max_length=10_000,
        help_text=(
            "JSON: `null` or `{from, tables: [...], columns: [{table, columns: [...]}]}`, the "
            "schema changes since your last sync. Listing `memories` (or one of its columns) "
            "pulls every live record again."
        ),
    )

    def validate_migration(self, value: str) -> dict | None:
        try:
            migration = json.loads(value)
        except ValueError:
            raise serializers.ValidationError("Must be JSON.") from None
        if migration is None:
            return None
        if not isinstance(migration, dict):
            raise serializers.ValidationError("Must be null or an object.")
        tables = migration.get("tables", [])
        columns = migration.get("columns", [])
        if not isinstance(migration.get("from"), int) or isinstance(migration.get("from"), bool):
            raise serializers.ValidationError("`from` must be an integer schema version.")
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise serializers.ValidationError("`tables` must be a list of table names.")
        if not isinstance(columns, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("table"), str)
            and isinstance(c.get("columns"), list)
            for c in columns
        ):
            raise serializers.ValidationError("`columns` must be a list of {table, columns}.")
        return migration


class PushQuerySerializer(QuerySerializer):
    last_pulled_at = serializers.IntegerField(
        min_value=1,
        max_value=MAX_CURSOR,
        help_text="The `timestamp` of the pull that preceded this push.",
    )


def migration_needs_full_pull(migration: dict | None) -> bool:
    if not migration:
        return False
    return TABLE in migration.get("tables", []) or any(
        c.get("table") == TABLE for c in migration.get("columns", [])
    )


class RawMemorySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    text_content = serializers.CharField()
    type = serializers.CharField()
    category = serializers.CharField(help_text="Server-owned (enrichment); ignored in a push.")
    tags = serializers.CharField(
        help_text="A JSON array of strings, as a string. Server-owned; ignored in a push."
    )
    enrichment_status = serializers.CharField(help_text="Server-owned; ignored in a push.")
    created_at = serializers.IntegerField(help_text="Milliseconds since the epoch; server-owned.")
    updated_at = serializers.IntegerField(help_text="Milliseconds since the epoch; server-owned.")
    enriched_at = serializers.IntegerField(
        allow_null=True, help_text="Milliseconds since the epoch, or null; server-owned."
    )


class MemoryChangesSerializer(serializers.Serializer):
    created = RawMemorySerializer(many=True)
    updated = RawMemorySerializer(many=True)
    deleted = serializers.ListField(child=serializers.UUIDField())


class ChangesSerializer(serializers.Serializer):
    memories = MemoryChangesSerializer()


UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class PushedRawMemorySerializer(serializers.Serializer):
    """A pushed raw record: only `text_content` and `type` are read; other columns (and
    WatermelonDB's `_status`, `_changed`) may be present and are ignored."""

    id = serializers.RegexField(UUID_PATTERN, help_text="A lowercase hyphenated UUID.")
    text_content = serializers.CharField(
        required=False, help_text="Required for a new record; the memories API's rules."
    )
    type = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="Empty or null: `note`."
    )


class PushedMemoryChangesSerializer(serializers.Serializer):
    created = PushedRawMemorySerializer(many=True)
    updated = PushedRawMemorySerializer(many=True)
    deleted = serializers.ListField(child=serializers.RegexField(UUID_PATTERN))


class PushChangesSerializer(serializers.Serializer):
    memories = PushedMemoryChangesSerializer()


class PullResponseSerializer(serializers.Serializer):
    changes = ChangesSerializer()
    timestamp = serializers.IntegerField(
        help_text="An opaque cursor (not a time): send it back as `last_pulled_at`."
    )


class PushResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    deleted = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class _ColumnSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="WatermelonDB column type: string, number, boolean.")
    isOptional = serializers.BooleanField()  # noqa: N815
    isIndexed = serializers.BooleanField()  # noqa: N815


class _TableSerializer(serializers.Serializer):
    name = serializers.CharField()
    columns = _ColumnSerializer(many=True)


class ClientSchemaSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    tables = _TableSerializer(many=True)
