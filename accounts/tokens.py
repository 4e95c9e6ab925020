"""The claims our tokens carry beyond simplejwt's, and the rule that checks them. Kept apart from
services.py because the authentication class imports it while DRF is still loading."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework_simplejwt.tokens import RefreshToken

# The token family (one login's chain of rotating refresh tokens), and the user's token version
# at issue; both are copied from a refresh token into the access tokens made from it.
FAMILY_CLAIM = "fam"
VERSION_CLAIM = "ver"


class ChainedRefreshToken(RefreshToken):
    """A refresh token whose validity its family decides (services.token_refresh), not
    simplejwt's blacklist lookup at decode time: a rotated token must still decode, so that its
    reuse is seen and answered by revoking the family."""

    def check_blacklist(self) -> None:
        return None


def token_version_current(user, payload: Mapping) -> bool:
    """Whether a token was issued under the user's current token version."""
    return payload.get(VERSION_CLAIM) == user.token_version
