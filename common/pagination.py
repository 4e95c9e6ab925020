"""Cursor pagination: stable while rows are inserted, since a cursor is a position, not an
offset."""

from rest_framework import exceptions
from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor."]}) from exc
