from __future__ import annotations

from django.apps import AppConfig

from accounts.signals import key_changed
from billing import live
from billing.signals import balance_moved


class GatewayConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gateway"

    def ready(self) -> None:
        """Listen to what accounts and billing announce; they never call the gateway."""
        # These import models, which Django allows only once the app registry is ready.
        from gateway import auth, limits  # noqa: PLC0415

        def move_live_balance(
            sender: object, *, account_id: int, amount_micros: int, **kwargs: object
        ) -> None:
            limits.balance_moved(account_id, amount_micros)

        key_changed.connect(auth.invalidate, dispatch_uid="gateway.auth.invalidate")
        balance_moved.connect(move_live_balance, weak=False, dispatch_uid="gateway.limits.balance")
        live.register_window_reader(limits.window_state)
