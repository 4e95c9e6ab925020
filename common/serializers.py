"""Serializer building blocks shared by every API: strict types, unknown fields refused."""

from __future__ import annotations

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and objects instead of stringifying them."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo (`text_content`) is an error, not a no-op."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class QuerySerializer(serializers.Serializer):
    """Query parameters: an empty value (`?type=`) is an error, not a silent "absent"."""

    def to_internal_value(self, data):
        empty = sorted(name for name in self.fields if name in data and data.get(name) == "")
        if empty:
            raise serializers.ValidationError(
                {name: ["This parameter may not be empty."] for name in empty}
            )
        return super().to_internal_value(data)
