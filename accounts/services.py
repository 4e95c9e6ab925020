"""Account use cases: registration, credential checks and token issue."""

from __future__ import annotations

from django.contrib.auth import authenticate, password_validation
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.tokens import RefreshToken

from common.errors import ConflictError

from .models import User


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
    """The user for these credentials, or None. Unknown emails cost a hash, like wrong ones."""
    user = authenticate(request, username=email.strip(), password=password)
    return user if user is not None and user.is_active else None


def tokens_for_user(user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"accessToken": str(refresh.access_token), "refreshToken": str(refresh)}
