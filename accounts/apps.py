from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Registers the API's security scheme with drf-spectacular.
        from . import schema  # noqa: F401
