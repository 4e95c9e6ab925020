"""The one JSON error shape of the API, and the domain exceptions that map onto it.

Every 4xx/5xx under /api/ is `{"error": {"code": str, "message": str, "details": object}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A business rule refused the request; the API answers `status_code` with `code`."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}
        self.headers = headers or {}


class ConflictError(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class UnprocessableError(DomainError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"


class LimitExceededError(DomainError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "limit_exceeded"


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status_code: int, code: str, message: str, details: Any = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status_code)


_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "validation_error",
}


def _first_message(details: Any) -> str:
    """The first human message in DRF's nested error details, prefixed by its field."""
    if isinstance(details, dict):
        for field, value in details.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(details, list) and details:
        return _first_message(details[0])
    return str(details)


def _sentence(text: str) -> str:
    """`text` as a sentence: a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _plain(details: Any) -> Any:
    if isinstance(details, dict):
        return {key: _plain(value) for key, value in details.items()}
    if isinstance(details, list):
        return [_plain(value) for value in details]
    return str(details)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, reshaped; domain errors and oversized bodies mapped here, once."""
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("payload_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(
            error_body("bad_request", "The request could not be understood."), status=400
        )
    if isinstance(exc, DatabaseError):
        logger.exception("database error while serving the API")
        return Response(
            error_body("service_unavailable", "The database is unavailable; try again shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        details = _plain(exc.detail)
        if isinstance(details, list):
            details = {"non_field_errors": details}
        message = _first_message(details)
    elif isinstance(exc, (Http404, exceptions.NotFound)):
        details, message = {}, "Not found."
    elif isinstance(exc, (PermissionDenied, exceptions.PermissionDenied)):
        details, message = {}, str(getattr(exc, "detail", "")) or "Permission denied."
    else:
        detail = getattr(exc, "detail", None)
        if isinstance(detail, dict):  # simplejwt's InvalidToken: {detail, code, messages}
            detail = detail.get("detail") or _first_message(_plain(detail))
        message = _sentence(str(detail)) if detail is not None else "Request failed."
        details = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retryAfterSeconds": int(exc.wait + 0.999)}

    code = "not_found" if isinstance(exc, Http404) else "error"
    for exc_class, exc_code in _DRF_CODES.items():
        if isinstance(exc, exc_class):
            code = exc_code
            break
    if isinstance(exc, PermissionDenied):  # Django's own, raised inside a DRF view
        code = "permission_denied"
    response.data = error_body(code, message, details)
    return response


def is_api_request(request) -> bool:
    return request.path.startswith("/api/")


def json_handler404(request, exception=None):
    if is_api_request(request):
        return error_response(404, "not_found", "No API endpoint or object at this address.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_handler400(request, exception=None):
    if is_api_request(request):
        if isinstance(exception, RequestDataTooBig):
            return error_response(413, "payload_too_large", "The request body is too large.")
        return error_response(400, "bad_request", "The request could not be understood.")
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def json_handler403(request, exception=None):
    if is_api_request(request):
        return error_response(403, "permission_denied", "Permission denied.")
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def json_handler500(request):
    if is_api_request(request):
        return error_response(500, "server_error", "An unexpected error occurred; it was logged.")
    from django.views.defaults import server_error

    return server_error(request)


@csrf_exempt
def api_not_found(request, *args, **kwargs):
    """Catch-all for unknown /api/ addresses (also while DEBUG is on)."""
    return error_response(404, "not_found", "No API endpoint at this address.")


def csrf_failure(request, reason=""):
    """CSRF refusals (admin and dashboard forms): JSON under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return error_response(403, "csrf_failed", "CSRF verification failed.")
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason=reason)
