"""Users: log in by email; `is_staff` is the API's "admin" role."""

from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models, transaction
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **fields) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **fields) -> User:
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields) -> User:
        fields.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **fields)

    def get_by_natural_key(self, username: str) -> User:
        return self.get(email__iexact=username)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True, max_length=254)
    is_staff = models.BooleanField(
        default=False, help_text="Staff are the API's 'admin' role and may use the admin site."
    )
    is_active = models.BooleanField(default=True)
    # Every token carries the version it was issued under; bumping it revokes them all at once
    # (accounts.services.user_tokens_revoke). Only ever changed by an UPDATE ... + 1, never by
    # save(), so a form holding a stale copy cannot write an old version back.
    token_version = models.PositiveIntegerField(default=0, editable=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Per-user daily limits (costs app); blank = the server default (USER_DAILY_*), 0 = no limit.
    daily_memory_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Memories per day. Blank: USER_DAILY_MEMORY_LIMIT; 0: none.",
    )
    daily_enrichment_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Enrichments per day. Blank: USER_DAILY_ENRICHMENT_LIMIT; 0: none.",
    )
    daily_cost_limit_cents = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="AI cost per day in US cents. Blank: USER_DAILY_COST_CENTS; 0: none.",
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email

    @property
    def roles(self) -> list[str]:
        return ["user", "admin"] if self.is_staff else ["user"]

    def save(self, **kwargs) -> None:
        """Save; a new password or a deactivation revokes every token the user holds, in the
        same transaction (whoever saves: the admin, `changepassword`, a service)."""
        reason = self._token_revocation_reason(kwargs.get("update_fields"))
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "token_version"
            ]
        with transaction.atomic():
            super().save(**kwargs)
            if reason:
                from .services import user_tokens_revoke

                user_tokens_revoke(user=self, reason=reason)

    def _token_revocation_reason(self, update_fields) -> str:
        if self._state.adding or self.pk is None:
            return ""
        fields = set(update_fields) if update_fields is not None else None
        # set_password() leaves the raw password in _password until the save; a hash upgrade
        # at login clears it first, so it is not a password change.
        if self._password is not None and (fields is None or "password" in fields):
            return TokenRevocation.PASSWORD_CHANGED
        if (
            not self.is_active
            and (fields is None or "is_active" in fields)
            and User.objects.filter(pk=self.pk, is_active=True).exists()
        ):
            return TokenRevocation.DEACTIVATED
        return ""


class TokenRevocation(models.TextChoices):
    LOGOUT = "logout", "logout"
    REUSED = "reused", "an already-used refresh token was presented"
    PASSWORD_CHANGED = "password_changed", "password changed"
    DEACTIVATED = "deactivated", "account deactivated"
    STAFF = "staff", "revoked by staff"


class RefreshTokenFamily(models.Model):
    """The chain of rotating refresh tokens that one login starts. Only `current_jti` may be
    exchanged; presenting an older member means the chain leaked, and revokes all of it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="token_families")
    current_jti = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, choices=TokenRevocation.choices, blank=True)

    class Meta:
        verbose_name_plural = "refresh token families"

    def __str__(self) -> str:
        return f"token family {self.pk} of user {self.user_id}"
