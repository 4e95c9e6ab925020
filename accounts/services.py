"""Account use cases: registration, credential checks, and the life of tokens: issue, rotate,
revoke.

Tokens. Every login starts a token family (RefreshTokenFamily): its refresh tokens rotate, and
only the newest (`current_jti`) may be exchanged. Presenting an older one means the chain leaked
(or two clients raced with one token): the whole family is revoked. Every token also carries the
user's `token_version`; bumping it (password change, deactivation) refuses every access and
refresh token issued before. simplejwt's OutstandingToken/BlacklistedToken rows are kept in step
for the admin, without the token itself: a stored token would be a usable credential.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.contrib.auth import authenticate, password_validation
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from common.errors import ConflictError

from . import lockout
from .models import RefreshTokenFamily, TokenRevocation, User
from .tokens import FAMILY_CLAIM, VERSION_CLAIM, ChainedRefreshToken, token_version_current

logger = logging.getLogger(__name__)


class TokenRejected(Exception):
    """A refresh token that cannot be used (invalid, expired, revoked or reused)."""


def user_register(*, email: str, password: str) -> User:
    """Create a user; `password` must pass Django's validators (raises ValidationError)."""
    email = User.objects.normalize_email(email).lower()
    password_validation.validate_password(password, User(email=email))
    try:
        with transaction.atomic():
            return User.objects.create_user(email=email, password=password)
    except IntegrityError as exc:
        raise ConflictError(
            "An account with this email already exists.", details={"email": ["already exists"]}
        ) from exc


def user_authenticate(*, request, email: str, password: str) -> User | None:
    """The user for these credentials, or None. Unknown emails cost a hash, like wrong ones.
    Raises LoginLockedError while the account is locked by failed logins."""
    email = email.strip()
    lockout.login_locked_check(email)
    user = authenticate(request, username=email, password=password)
    if user is None or not user.is_active:
        lockout.login_failed(email)
        return None
    lockout.login_succeeded(email)
    return user


# --- tokens ---------------------------------------------------------------------------------------


def _refresh_token_new(user: User, *, family_id: uuid.UUID, version: int) -> ChainedRefreshToken:
    token = ChainedRefreshToken()
    token[api_settings.USER_ID_CLAIM] = str(getattr(user, api_settings.USER_ID_FIELD))
    token[FAMILY_CLAIM] = str(family_id)
    token[VERSION_CLAIM] = version
    OutstandingToken.objects.create(
        user=user,
        jti=token[api_settings.JTI_CLAIM],
        token="",  # never the token itself
        created_at=token.current_time,
        expires_at=datetime_from_epoch(token["exp"]),
    )
    return token


def _pair(refresh: RefreshToken) -> dict[str, str]:
    return {"accessToken": str(refresh.access_token), "refreshToken": str(refresh)}


def tokens_for_user(user: User) -> dict[str, str]:
    """A new login: a new token family and its first access and refresh tokens."""
    family_id = uuid.uuid4()
    with transaction.atomic():
        version = User.objects.filter(pk=user.pk).values_list("token_version", flat=True).get()
        refresh = _refresh_token_new(user, family_id=family_id, version=version)
        RefreshTokenFamily.objects.create(
            id=family_id,
            user=user,
            current_jti=refresh[api_settings.JTI_CLAIM],
            expires_at=datetime_from_epoch(refresh["exp"]),
        )
    return _pair(refresh)


def _decode_refresh(raw: str) -> tuple[ChainedRefreshToken, uuid.UUID]:
    try:
        token = ChainedRefreshToken(raw)
        family_id = uuid.UUID(str(token[FAMILY_CLAIM]))
    except (TokenError, KeyError, ValueError) as exc:
        raise TokenRejected("The refresh token is invalid or expired.") from exc
    return token, family_id


def _blacklist(jtis: Iterable[str]) -> None:
    outstanding = OutstandingToken.objects.filter(jti__in=list(jtis), blacklistedtoken__isnull=True)
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )


def _families_revoke(families: QuerySet[RefreshTokenFamily], *, reason: str) -> int:
    """Revoke the live families among `families`; returns how many were live."""
    with transaction.atomic():
        # Locked first, so the current token read here is the one a racing refresh left.
        live = list(
            families.filter(revoked_at__isnull=True)
            .select_for_update()
            .values_list("pk", "current_jti")
        )
        if not live:
            return 0
        RefreshTokenFamily.objects.filter(pk__in=[pk for pk, _ in live]).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )
        _blacklist(jti for _, jti in live)
    return len(live)


def token_refresh(*, refresh_token: str) -> dict[str, str]:
    """Exchange the family's current refresh token for a new pair. Any other member of the
    family (an already rotated token, or the loser of a race) revokes the whole family.
    Raises TokenRejected."""
    token, family_id = _decode_refresh(refresh_token)
    jti = token[api_settings.JTI_CLAIM]
    revoked = "The refresh token has been revoked; log in again."
    with transaction.atomic():
        family = (
            RefreshTokenFamily.objects.select_for_update()
            .select_related("user")
            .filter(pk=family_id)
            .first()
        )
        if family is None or family.revoked_at is not None:
            refused = revoked
        elif family.current_jti != jti or BlacklistedToken.objects.filter(token__jti=jti).exists():
            _families_revoke(
                RefreshTokenFamily.objects.filter(pk=family.pk), reason=TokenRevocation.REUSED
            )
            logger.warning(
                "refresh token reuse: token family %s of user %s revoked",
                family.pk,
                family.user_id,
            )
            refused = "The refresh token was already used; its session is revoked. Log in again."
        elif not family.user.is_active or not token_version_current(family.user, token.payload):
            refused = revoked
        else:
            refused = ""
            _blacklist([jti])
            new = _refresh_token_new(
                family.user, family_id=family.pk, version=family.user.token_version
            )
            family.current_jti = new[api_settings.JTI_CLAIM]
            family.expires_at = datetime_from_epoch(new["exp"])
            family.save(update_fields=["current_jti", "expires_at"])
    if refused:
        raise TokenRejected(refused)
    return _pair(new)


def token_family_logout(*, refresh_token: str) -> None:
    """Revoke the family of this refresh token (any member of it, even an already rotated one).
    Safe to repeat. Raises TokenRejected for a token that is not ours or has expired."""
    _, family_id = _decode_refresh(refresh_token)
    _families_revoke(RefreshTokenFamily.objects.filter(pk=family_id), reason=TokenRevocation.LOGOUT)


def user_tokens_revoke(*, user: User, reason: str) -> None:
    """Refuse every access and refresh token the user holds (and none issued afterwards)."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(token_version=F("token_version") + 1)
        user.token_version = (
            User.objects.filter(pk=user.pk).values_list("token_version", flat=True).get()
        )
        _families_revoke(RefreshTokenFamily.objects.filter(user=user), reason=reason)


def refresh_tokens_revoke(*, jtis: Iterable[str]) -> int:
    """Staff revocation of refresh tokens by jti: each one is blacklisted, and a family whose
    current token is among them is revoked. Returns how many families were live."""
    jtis = list(jtis)
    with transaction.atomic():
        _blacklist(jtis)
        return _families_revoke(
            RefreshTokenFamily.objects.filter(current_jti__in=jtis), reason=TokenRevocation.STAFF
        )
