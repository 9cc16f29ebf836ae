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
        from gateway import auth, limits, metering, usage  # noqa: PLC0415

        def move_live_balance(
            sender: object, *, account_id: int, amount_micros: int, **kwargs: object
        ) -> None:
            limits.balance_moved(account_id, amount_micros)

        key_changed.connect(auth.invalidate, dispatch_uid="gateway.auth.invalidate")
        balance_moved.connect(move_live_balance, weak=False, dispatch_uid="gateway.limits.balance")

        def after_flush(sender: object, *, account_ids: set[int], **kwargs: object) -> None:
            limits.persist_windows(account_ids)
            usage.after_flush(account_ids)  # live meters (and in-process rollups); never raises

        def before_drain(sender: object, **kwargs: object) -> None:
            limits.reap_now_and_then()

        live.register_window_reader(limits.window_state)
        metering.flushed.connect(after_flush, weak=False, dispatch_uid="gateway.after_flush")
        metering.draining.connect(before_drain, weak=False, dispatch_uid="gateway.before_drain")
