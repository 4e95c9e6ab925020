from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Registers the API's security scheme with drf-spectacular.
        from . import checks, schema  # noqa: F401 - the deploy check, the security scheme
