"""The API's request parser: DRF's JSON parser, with deeply nested documents refused cleanly."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """A document nested deeper than Python's recursion limit (``[[[[...`` thousands deep) makes
    the json module raise RecursionError, which would be a 500; it is a malformed request."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc
