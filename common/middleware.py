"""Request-level middleware: one log line per request, and the request-body size limit."""

from __future__ import annotations

import logging
import time

from django.conf import settings

from .errors import error_response, is_api_request

logger = logging.getLogger("memoryconnector.request")


class RequestLogMiddleware:
    """One structured line per request: method, path (never the query string), status,
    duration and user id. Query strings and bodies are left out: they can carry secrets."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        # DRF copies the JWT-authenticated user onto the Django request, so this sees it too.
        user = getattr(request, "user", None)
        user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "user_id": str(user_id) if user_id is not None else None,
        }
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "%s %s %s %.1fms user=%s",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            fields["user_id"],
            extra=fields,
        )
        return response


class BodySizeLimitMiddleware:
    """Refuse bodies over MAX_REQUEST_BODY_BYTES with 413 before anything reads them. A view
    class may name another limit with `max_body_setting` (the sync push: SYNC_PUSH_MAX_BYTES)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number.")
        view = getattr(view_func, "view_class", view_func)
        limit = getattr(settings, getattr(view, "max_body_setting", "MAX_REQUEST_BODY_BYTES"))
        if length > limit:
            return error_response(
                413,
                "payload_too_large",
                f"The request body is larger than {limit} bytes.",
                {"maxBytes": limit},
            )
        return None


class ApiExceptionMiddleware:
    """An unexpected exception under /api/ becomes the JSON 500 shape, even with DEBUG on
    (Django's debug page would otherwise show a stack trace)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_api_request(request):
            return None
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(500, "server_error", "An unexpected error occurred; it was logged.")
