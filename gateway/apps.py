from __future__ import annotations

from typing import Any

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
        from django.contrib.auth.signals import user_logged_out  # noqa: PLC0415
        from django.db import transaction  # noqa: PLC0415
        from django.db.models.signals import post_save  # noqa: PLC0415

        from accounts.models import User  # noqa: PLC0415
        from gateway import auth, consumers, limits, metering, usage  # noqa: PLC0415

        def move_live_balance(
            sender: object, *, account_id: int, amount_micros: int, **kwargs: object
        ) -> None:
            limits.balance_moved(account_id, amount_micros)

        def logged_out(sender: object, *, request: Any, user: Any, **kwargs: object) -> None:
            if user is not None and user.pk is not None:
                session_key = request.session.session_key if request is not None else None
                consumers.end_sessions(user_id=user.pk, ended_session_key=session_key)

        def user_saved(
            sender: object, *, instance: User, created: bool, update_fields: Any, **kwargs: object
        ) -> None:
            # A new password or a deactivation ends other sessions; a log-in's last_login does not.
            if not created and set(update_fields or ()) != {"last_login"}:
                user_id = instance.pk
                transaction.on_commit(lambda: consumers.end_sessions(user_id=user_id))

        user_logged_out.connect(logged_out, weak=False, dispatch_uid="gateway.meter.logout")
        post_save.connect(user_saved, sender=User, weak=False, dispatch_uid="gateway.meter.user")
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
