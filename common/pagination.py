"""Cursor pagination: stable while rows are inserted, since a cursor is a position, not an
offset."""

from django.utils.dateparse import parse_datetime
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination

INVALID = {"cursor": ["Invalid cursor."]}


class NewestFirstCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError(INVALID) from exc
        # A well-formed cursor whose position is not a time (tampered with) would fail in SQL.
        if cursor is not None and cursor.position is not None:
            try:
                valid = parse_datetime(cursor.position) is not None
            except ValueError:
                valid = False
            if not valid:
                raise exceptions.ValidationError(INVALID)
        return cursor
