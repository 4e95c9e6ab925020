"""The API's authentication: simplejwt's bearer tokens, refused once revoked."""

from __future__ import annotations

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication

from .tokens import token_version_current


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's authentication, plus: the token must carry the user's current token version,
    which a password change or a deactivation moves on (so reactivation revives nothing)."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        if not token_version_current(user, validated_token.payload):
            raise AuthenticationFailed(
                "This token has been revoked; log in again.", code="token_revoked"
            )
        return user
