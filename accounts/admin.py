from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from common.admin import BigTableAdminMixin, ReadOnlyAdminMixin

from .models import User
from .services import refresh_tokens_revoke


class EmailUserCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class EmailUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(BigTableAdminMixin, DjangoUserAdmin):
    form = EmailUserChangeForm
    add_form = EmailUserCreationForm
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_active"]
    search_fields = ["email"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Role", {"fields": ["is_active", "is_staff", "is_superuser"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
        (
            "Daily limits (blank: the server default; 0: no limit)",
            {"fields": ["daily_memory_limit", "daily_enrichment_limit", "daily_cost_limit_cents"]},
        ),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]}),
    ]
    readonly_fields = ["last_login", "date_joined"]


# --- tokens ---------------------------------------------------------------------------------------
# simplejwt's own admin shows each outstanding refresh token whole, and a refresh token is a
# credential: these show its id (jti), owner and dates, and revoke instead.
for _model in (OutstandingToken, BlacklistedToken):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(blacklistedtoken__isnull=self.value() == "no")
        return queryset


@admin.register(OutstandingToken)
class OutstandingTokenAdmin(ReadOnlyAdminMixin, BigTableAdminMixin, admin.ModelAdmin):
    list_display = ["jti", "user", "created_at", "expires_at", "revoked"]
    fields = ["jti", "user", "created_at", "expires_at", "revoked"]
    readonly_fields = fields
    list_filter = [RevokedFilter]
    search_fields = ["jti", "user__email"]
    ordering = ["-created_at"]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "blacklistedtoken")

    @admin.display(boolean=True, description="revoked")
    def revoked(self, obj: OutstandingToken) -> bool:
        return hasattr(obj, "blacklistedtoken")

    @admin.action(
        description="Revoke the selected refresh tokens (and their sessions)",
        permissions=["revoke"],
    )
    def revoke(self, request, queryset) -> None:
        jtis = list(queryset.values_list("jti", flat=True))
        sessions = refresh_tokens_revoke(jtis=jtis)
        self.message_user(
            request, f"Revoked {len(jtis)} refresh token(s); {sessions} session(s) ended."
        )

    def has_revoke_permission(self, request) -> bool:
        # Revoking is the one change this read-only page allows.
        return request.user.has_perm("token_blacklist.change_outstandingtoken")


@admin.register(BlacklistedToken)
class BlacklistedTokenAdmin(ReadOnlyAdminMixin, BigTableAdminMixin, admin.ModelAdmin):
    list_display = ["jti", "user", "created_at", "expires_at", "blacklisted_at"]
    fields = list_display
    readonly_fields = list_display
    search_fields = ["token__jti", "token__user__email"]
    ordering = ["-blacklisted_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("token__user")

    @admin.display(description="jti", ordering="token__jti")
    def jti(self, obj: BlacklistedToken) -> str:
        return obj.token.jti

    @admin.display(description="user", ordering="token__user__email")
    def user(self, obj: BlacklistedToken):
        return obj.token.user

    @admin.display(description="created at", ordering="token__created_at")
    def created_at(self, obj: BlacklistedToken):
        return obj.token.created_at

    @admin.display(description="expires at", ordering="token__expires_at")
    def expires_at(self, obj: BlacklistedToken):
        return obj.token.expires_at
