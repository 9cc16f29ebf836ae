"""Every call we make to Stripe goes through here: a StripeClient built from settings at call time,
so tests (and operators) can point STRIPE_API_BASE at a fake Stripe on loopback."""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings


class BillingDisabled(RuntimeError):
    """No STRIPE_SECRET_KEY is set: payments are off and operators credit balances by hand."""


def is_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def client() -> stripe.StripeClient:
    if not is_enabled():
        raise BillingDisabled("billing is off: STRIPE_SECRET_KEY is not set")
    base = str(getattr(settings, "STRIPE_API_BASE", "") or "").rstrip("/")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base} if base else None,
        max_network_retries=2,
    )


def create_customer(*, email: str, name: str, account_id: int) -> str:
    customer = client().v1.customers.create(
        params={"email": email, "name": name, "metadata": {"account_id": str(account_id)}},
        # Two clicks racing to make the account's first customer make one in Stripe.
        options={"idempotency_key": f"tf-customer-{account_id}"},
    )
    return str(customer.id)


def create_checkout_session(params: dict[str, Any]) -> stripe.checkout.Session:
    return client().v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def create_portal_session(params: dict[str, Any]) -> stripe.billing_portal.Session:
    return client().v1.billing_portal.sessions.create(params=params)  # type: ignore[arg-type]


def verify_webhook(*, payload: bytes, signature: str | None) -> None:
    """Raise stripe.SignatureVerificationError unless ``signature`` is Stripe's signature of
    ``payload`` with STRIPE_WEBHOOK_SECRET, made within the last five minutes."""
    secret = str(getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or "")
    stripe.WebhookSignature.verify_header(
        payload.decode("utf-8"), signature, secret, stripe.Webhook.DEFAULT_TOLERANCE
    )
