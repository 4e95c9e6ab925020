"""Users: log in by email; `is_staff` is the API's "admin" role."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
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
