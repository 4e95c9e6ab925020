"""The API's security scheme in the OpenAPI schema and Swagger UI (a drf-spectacular extension,
loaded in AccountsConfig.ready).

The reference's notes tell people to click "Authorize" and enter `Bearer <your-access-token>`.
drf-spectacular's own scheme for simplejwt is HTTP bearer, for which Swagger UI adds "Bearer "
itself, so that gesture sent `Bearer Bearer ...` and got a 401. An API-key scheme on the
Authorization header sends what was typed, as it was typed."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework_simplejwt.settings import api_settings

SCHEME_NAME = "jwtAuth"


class BearerHeaderScheme(OpenApiAuthenticationExtension):
    # Ours (simplejwt's plus revocation) and simplejwt's own.
    target_class = "rest_framework_simplejwt.authentication.JWTAuthentication"
    match_subclasses = True
    name = SCHEME_NAME
    # Over drf-spectacular's bundled simplejwt extension (priority 0).
    priority = 1

    def get_security_definition(self, auto_schema) -> dict:
        prefix = api_settings.AUTH_HEADER_TYPES[0]
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                f'A JWT access token from `POST /api/v1/auth/login`, with "{prefix} " in front: '
                f"type `{prefix} <your-access-token>` into Authorize."
            ),
        }
