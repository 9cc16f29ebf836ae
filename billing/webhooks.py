"""Stripe webhooks: verified, recorded by event id in the same transaction as their effect, and
dispatched to one handler per event type. Replays change nothing; out-of-order subscription events
never let an older state override a newer one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
import stripe
from django.conf import settings
from django.db import IntegrityError, transaction

from accounts import audit
from accounts.models import Account, AuditEvent
from billing import ledger, money, plans, stripe_api
from billing.models import Plan, StripeEvent, Subscription

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LIVE = ("active", "trialing")
DELINQUENT = ("past_due", "unpaid")
ENDED = ("canceled", "incomplete_expired")


class BadSignature(ValueError):
    pass


class BadPayload(ValueError):
    """A signed delivery that is not a well-formed event: answered 400 and logged, never applied
    (Stripe retries it; a fixed endpoint then applies the retry)."""


# How far a signature's or an event's time may be ahead of our clock: Stripe's own tolerance.
CLOCK_SKEW_SECONDS = 300
# The most a paid top-up can be (checkout refuses to start anything larger), in cents.
MAX_TOPUP_CENTS = 10_000_00


def grace_period() -> timedelta:
    return timedelta(days=int(getattr(settings, "BILLING_GRACE_DAYS", 7)))


def receive(*, payload: bytes, signature: str | None) -> str:
    """Verify a delivery and apply it once. Returns what happened, for the response and the log."""
    if not getattr(settings, "STRIPE_WEBHOOK_SECRET", ""):
        raise BadSignature("webhooks are off: STRIPE_WEBHOOK_SECRET is not set")
    try:
        stripe_api.verify_webhook(payload=payload, signature=signature)
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise BadSignature(str(exc)) from exc
    # The library refuses a signature that is too old, not one from the future.
    if signed_at(signature) > time.time() + CLOCK_SKEW_SECONDS:
        raise BadSignature("the signature's timestamp is in the future")
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadPayload("the body is not JSON") from exc
    return apply(event)


def signed_at(signature: str | None) -> int:
    """The ``t=`` timestamp of a (verified) Stripe-Signature header."""
    for part in (signature or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            return int(value)
    raise BadSignature("the signature has no timestamp")


def apply(event: Any) -> str:
    """Apply a parsed event once; BadPayload (nothing applied) unless it is well formed."""
    if not isinstance(event, dict):
        raise BadPayload("the body is not a Stripe event")
    event_id = _required_id(event.get("id"), "id")
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise BadPayload("the event has no type")
    obj = _get(event, "data", "object")
    if not isinstance(obj, dict):
        raise BadPayload("the event's data.object is not an object")
    created = _timestamp(event.get("created"), "created")
    if created is None or created.timestamp() > time.time() + CLOCK_SKEW_SECONDS:
        raise BadPayload("the event's created time is missing or in the future")
    if StripeEvent.objects.filter(event_id=event_id).exists():
        return "duplicate"
    handler = HANDLERS.get(event_type)
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = StripeEvent.objects.create(
                    event_id=event_id, type=event_type, created=created
                )
        except IntegrityError:
            return "duplicate"
        # What the event changes (a top-up, a plan) is recorded as done by Stripe's webhook.
        with audit.acting(audit.Actor(kind=AuditEvent.ActorKind.WEBHOOK, label=event_id)):
            account, outcome = handler(obj, created) if handler else (None, "ignored")
        row.account = account
        row.outcome = outcome[:200]
        row.save(update_fields=["account", "outcome"])
    log.info("stripe event", extra={"event": event_id, "type": event_type, "outcome": outcome})
    return outcome


# --- top-ups -----------------------------------------------------------------------------------


def _checkout_completed(session: Obj, created: datetime) -> tuple[Account | None, str]:
    metadata = _object(session, "metadata")
    session_id = _required_id(session.get("id"), "the session's id")
    amount_total = session.get("amount_total")
    if amount_total is not None and not (
        type(amount_total) is int and 0 <= amount_total <= MAX_TOPUP_CENTS
    ):
        raise BadPayload(f"amount_total is not a whole number of cents up to {MAX_TOPUP_CENTS}")
    account = _account_for(
        account_id=metadata.get("account_id") or session.get("client_reference_id"),
        customer_id=session.get("customer"),
    )
    if account is None:
        return None, "no account"
    if session.get("mode") == "subscription":
        return account, _note_subscription_checkout(account, session)
    if metadata.get("kind") != "topup":
        return account, "ignored: not a top-up"
    if session.get("payment_status") != "paid":
        # Delayed payment methods: checkout.session.async_payment_succeeded credits it later.
        return account, "awaiting payment"
    amount_micros = money.from_cents(amount_total or 0)
    if amount_micros <= 0:
        return account, "ignored: nothing paid"
    payment_intent = _id(session.get("payment_intent"))
    entry = ledger.credit(
        account=account,
        amount_micros=amount_micros,
        idempotency_key=f"stripe:checkout:{session_id}",
        kind=ledger.Kind.TOPUP,
        description=f"Top-up of {money.format_usd(amount_micros)} through Stripe Checkout",
        reference=" ".join(part for part in (session_id, payment_intent) if part),
    )
    return account, "credited" if entry is not None else "duplicate session"


def _note_subscription_checkout(account: Account, session: Obj) -> str:
    """The plan moves on customer.subscription.*; here we only learn the Stripe ids early."""
    sub, _ = Subscription.objects.select_for_update().get_or_create(account=account)
    fields = []
    if not sub.stripe_subscription_id and session.get("subscription"):
        sub.stripe_subscription_id = _id(session.get("subscription"))
        fields.append("stripe_subscription_id")
    if not sub.stripe_customer_id and session.get("customer"):
        sub.stripe_customer_id = _id(session.get("customer"))
        fields.append("stripe_customer_id")
    if fields:
        sub.save(update_fields=[*fields, "updated_at"])
    return "subscription checkout noted"


# --- subscriptions ----------------------------------------------------------------------------


def _subscription_event(
    stripe_sub: Obj, created: datetime, *, deleted: bool
) -> tuple[Account | None, str]:
    sub_id = _required_id(stripe_sub.get("id"), "the subscription's id")
    period_end = _timestamp(
        stripe_sub.get("current_period_end")
        or _get(stripe_sub, "items", "data", 0, "current_period_end"),
        "current_period_end",
    )
    account = _account_for(
        account_id=_object(stripe_sub, "metadata").get("account_id"),
        customer_id=stripe_sub.get("customer"),
        subscription_id=sub_id,
    )
    if account is None:
        return None, "no account"
    sub, _ = Subscription.objects.select_for_update().get_or_create(account=account)
    if sub.last_event_created is not None and created < sub.last_event_created:
        return account, "stale: a newer event was applied"
    if sub.stripe_subscription_id == sub_id and sub.status == "canceled":
        return account, "stale: this subscription has ended"
    if (
        deleted
        and sub.stripe_subscription_id
        and sub.stripe_subscription_id != sub_id
        and sub.status not in ENDED
    ):
        return account, "ignored: not the current subscription"
    price_id = _price_id(stripe_sub)
    plan = Plan.objects.filter(stripe_price_id=price_id).first() if price_id else None
    status = "canceled" if deleted else str(stripe_sub.get("status") or "")
    sub.stripe_subscription_id = sub_id
    sub.stripe_customer_id = _id(stripe_sub.get("customer"))
    sub.stripe_price_id = price_id
    sub.status = status
    sub.current_period_end = period_end
    sub.last_event_created = created
    if plan is not None:
        sub.plan = plan
    outcome = f"subscription {status}"
    if status in LIVE:
        sub.grace_until = None
        if plan is None:
            outcome = f"subscription {status}: unknown price {price_id!r}"
        elif plans.assign_plan(account=account, plan=plan):
            outcome += f": moved to {plan.slug}"
    elif status in DELINQUENT:
        if sub.grace_until is None:
            sub.grace_until = created + grace_period()
        if plan is not None and plans.assign_plan(account=account, plan=plan):
            outcome += f": moved to {plan.slug}"
    elif status in ENDED:
        sub.grace_until = None
        fallback = plans.default()
        if plans.assign_plan(account=account, plan=fallback):
            outcome += f": moved to {fallback.slug}"
    sub.save()
    return account, outcome


def _subscription_created_or_updated(obj: Obj, created: datetime) -> tuple[Account | None, str]:
    return _subscription_event(obj, created, deleted=False)


def _subscription_deleted(obj: Obj, created: datetime) -> tuple[Account | None, str]:
    return _subscription_event(obj, created, deleted=True)


def _invoice_event(invoice: Obj, created: datetime, *, paid: bool) -> tuple[Account | None, str]:
    sub_id = _id(
        invoice.get("subscription")
        or _get(invoice, "parent", "subscription_details", "subscription")
    )
    if not sub_id:
        return None, "ignored: not a subscription invoice"
    account = _account_for(
        account_id=(
            _get(invoice, "parent", "subscription_details", "metadata", "account_id")
            or _get(invoice, "subscription_details", "metadata", "account_id")
        ),
        customer_id=invoice.get("customer"),
        subscription_id=sub_id,
    )
    if account is None:
        return None, "no account"
    sub, _ = Subscription.objects.select_for_update().get_or_create(account=account)
    if sub.stripe_subscription_id and sub.stripe_subscription_id != sub_id:
        return account, "ignored: not the current subscription"
    if sub.last_event_created is not None and created < sub.last_event_created:
        return account, "stale: a newer event was applied"
    if sub.status in ENDED:
        return account, "ignored: the subscription has ended"
    sub.stripe_subscription_id = sub_id
    sub.last_event_created = created
    if paid:
        sub.grace_until = None
        if sub.status in DELINQUENT or not sub.status:
            sub.status = "active"
        outcome = "invoice paid"
        if sub.plan is not None and plans.assign_plan(account=account, plan=sub.plan):
            outcome += f": back on {sub.plan.slug}"
    else:
        if sub.status in LIVE or not sub.status:
            sub.status = "past_due"
        if sub.grace_until is None:
            sub.grace_until = created + grace_period()
        outcome = f"payment failed: grace until {sub.grace_until.isoformat()}"
    sub.save()
    return account, outcome


def end_grace(*, at: datetime) -> int:
    """Move accounts whose grace after a failed payment has run out back to the default (Test)
    plan. Safe to run twice: a lapsed subscription has no grace_until left."""
    moved = 0
    fallback = plans.default()
    due = Subscription.objects.filter(grace_until__lte=at).values_list("pk", flat=True)
    for pk in list(due):
        with transaction.atomic():
            sub = (
                Subscription.objects.select_for_update()
                .select_related("account")
                .filter(pk=pk, grace_until__lte=at)
                .first()
            )
            if sub is None:
                continue
            sub.grace_until = None
            sub.status = "unpaid"
            sub.save(update_fields=["grace_until", "status", "updated_at"])
            with audit.acting(
                audit.Actor(kind=AuditEvent.ActorKind.SYSTEM, label="payment grace ended")
            ):
                plans.assign_plan(account=sub.account, plan=fallback)
            moved += 1
    return moved


HANDLERS: dict[str, Callable[[Obj, datetime], tuple[Account | None, str]]] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "customer.subscription.created": _subscription_created_or_updated,
    "customer.subscription.updated": _subscription_created_or_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.paid": partial(_invoice_event, paid=True),
    "invoice.payment_failed": partial(_invoice_event, paid=False),
}


# --- helpers -----------------------------------------------------------------------------------


def _account_for(
    *, account_id: Any = None, customer_id: Any = None, subscription_id: str = ""
) -> Account | None:
    customer = _id(customer_id)
    if account_id and str(account_id).isdigit():
        account = Account.objects.filter(pk=int(account_id)).first()
        # Metadata names the account; a customer that belongs to another account wins nothing.
        if account is not None and (
            not customer or not account.stripe_customer_id or account.stripe_customer_id == customer
        ):
            return account
        return None
    if customer:
        account = Account.objects.filter(stripe_customer_id=customer).first()
        if account is not None:
            return account
    if subscription_id:
        sub = Subscription.objects.filter(stripe_subscription_id=subscription_id).first()
        if sub is not None:
            return sub.account
    return None


def _price_id(stripe_sub: Obj) -> str:
    item = _get(stripe_sub, "items", "data", 0) or {}
    return _id(
        _get(item, "price", "id")
        or _get(item, "plan", "id")
        or _get(stripe_sub, "plan", "id")
        or ""
    )


def _id(value: Any) -> str:
    """A Stripe reference is an id string, or the expanded object carrying one."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _timestamp(value: Any, name: str) -> datetime | None:
    """A Stripe time (whole seconds since the epoch), or None when absent."""
    if value is None:
        return None
    if type(value) is not int or not 0 < value < _LAST_SECOND:
        raise BadPayload(f"{name} is not a time in whole seconds")
    return datetime.fromtimestamp(value, tz=UTC)


_LAST_SECOND = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp())


def _required_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadPayload(f"{name} is missing or not a string")
    return value


def _object(obj: Obj, name: str) -> Obj:
    """A field that must be an object when present (metadata)."""
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"{name} is not an object")
    return value


def _get(obj: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or len(obj) <= step:
                return None
            obj = obj[step]
        else:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(step)
    return obj
