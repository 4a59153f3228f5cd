from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "webapp.accounts"
    label = "accounts"
    verbose_name = "Accounts, roles and audit log"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (login / logout audit)
