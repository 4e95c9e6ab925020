"""drf-spectacular hook: document the shared error shape on every operation."""

from __future__ import annotations

ERROR_COMPONENT = {
    "type": "object",
    "description": "Every 4xx/5xx answer of the API has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {
                    "type": "string",
                    "example": "textContent: Ensure this field has no more than 8000 characters.",
                },
                "details": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}

_DESCRIPTIONS = {
    "400": "Malformed JSON or invalid fields; `details` names each field and its rule.",
    "401": "Missing, invalid or expired access token.",
    "403": "Authenticated, but not allowed (staff only).",
    "404": "No such object for this user.",
    "405": "Method not allowed.",
    "413": "Request body too large.",
    "415": "Content-Type must be application/json.",
    "429": "Throttled or over a daily limit; see the Retry-After header.",
    "503": "A backing service is unavailable; retry later.",
}


def add_error_responses(result, generator, request, public):
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_COMPONENT
    ref = {"$ref": "#/components/schemas/Error"}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            codes = ["400", "401", "403", "404", "405", "413", "415", "429", "503"]
            if not operation.get("security") or {} in operation.get("security", []):
                codes.remove("401")
                codes.remove("403")
            if method in ("get", "delete"):
                codes = [c for c in codes if c not in ("413", "415")]
            for code, response in responses.items():
                # Error responses a view declares itself (409, 422, ...) get the shape too.
                if code.isdigit() and int(code) >= 400 and not response.get("content"):
                    response["content"] = {"application/json": {"schema": ref}}
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": _DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
