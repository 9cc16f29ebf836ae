from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self) -> None:
        # Log-ins, log-outs and failed log-ins reach the audit log through Django's signals.
        from accounts import audit  # noqa: PLC0415 (models must be loaded first)

        audit.listen()
