"""Sending people to Stripe: top-ups and plan subscriptions through Checkout, plan changes and
cancellation through the customer portal, and the account's Stripe customer, made on first use.

Nothing here moves money or plans: that happens only when Stripe's signed webhook says it happened
(billing.webhooks)."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Account, User
from billing import money, stripe_api
from billing.models import Plan, Subscription

TOPUP_PRESETS_MICROS = (
    money.from_cents(10_00),
    money.from_cents(25_00),
    money.from_cents(100_00),
)
TOPUP_MIN_MICROS = money.from_cents(5_00)
TOPUP_MAX_MICROS = money.from_cents(10_000_00)
TOPUP_PRODUCT_NAME = "Token Factory balance top-up"


class CheckoutError(ValueError):
    pass


@dataclass(frozen=True)
class Redirect:
    """Where to send the browser next, and the Stripe session that lives there."""

    url: str
    session_id: str


def ensure_customer(*, account: Account, user: User) -> str:
    """The account's Stripe customer id, creating the customer the first time it is needed."""
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer_id = stripe_api.create_customer(
        email=user.email, name=account.name, account_id=account.pk
    )
    # Only the first writer wins; a concurrent request keeps whichever id landed first.
    Account.objects.filter(pk=account.pk, stripe_customer_id="").update(
        stripe_customer_id=customer_id
    )
    account.stripe_customer_id = (
        Account.objects.values_list("stripe_customer_id", flat=True).get(pk=account.pk)
        or customer_id
    )
    return account.stripe_customer_id


def validate_topup(amount_micros: int) -> None:
    if amount_micros < TOPUP_MIN_MICROS:
        raise CheckoutError(f"The smallest top-up is {money.format_usd(TOPUP_MIN_MICROS)}.")
    if amount_micros > TOPUP_MAX_MICROS:
        raise CheckoutError(f"The largest top-up is {money.format_usd(TOPUP_MAX_MICROS)}.")
    if amount_micros % money.MICROS_PER_CENT:
        raise CheckoutError("A top-up must be a whole number of cents.")


def _metadata(account: Account, **extra: str) -> dict[str, str]:
    return {"account_id": str(account.pk), **extra}


def start_topup(
    *, account: Account, user: User, amount_micros: int, success_url: str, cancel_url: str
) -> Redirect:
    """A Checkout Session (mode payment) for ``amount_micros``; the webhook credits it."""
    validate_topup(amount_micros)
    customer_id = ensure_customer(account=account, user=user)
    metadata = _metadata(account, kind="topup", amount_micros=str(amount_micros))
    session = stripe_api.create_checkout_session(
        {
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": str(account.pk),
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": money.to_cents(amount_micros),
                        "product_data": {"name": TOPUP_PRODUCT_NAME},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
    )
    return Redirect(url=str(session.url), session_id=str(session.id))


def live_subscription(account: Account) -> Subscription | None:
    sub = Subscription.objects.filter(account=account).select_related("plan").first()
    if sub is None or not sub.stripe_subscription_id or not sub.is_live:
        return None
    return sub


def subscribable(plan: Plan) -> bool:
    return plan.is_public and bool(plan.stripe_price_id) and plan.monthly_price_micros > 0


def start_subscription(
    *, account: Account, user: User, plan: Plan, success_url: str, cancel_url: str
) -> Redirect:
    """Subscribe through Checkout (mode subscription); an account that already pays for a plan
    changes it in the customer portal, so it never ends up with two subscriptions."""
    if not subscribable(plan):
        raise CheckoutError(f"{plan.name} cannot be bought here.")
    current = live_subscription(account)
    if current is not None:
        if current.plan_id == plan.pk:
            raise CheckoutError(f"You are already subscribed to {plan.name}.")
        return open_portal(
            account=account,
            user=user,
            return_url=cancel_url,
            flow={
                "type": "subscription_update",
                "subscription_update": {"subscription": current.stripe_subscription_id},
            },
        )
    customer_id = ensure_customer(account=account, user=user)
    metadata = _metadata(account, kind="subscription", plan=plan.slug)
    session = stripe_api.create_checkout_session(
        {
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": str(account.pk),
            "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
    )
    return Redirect(url=str(session.url), session_id=str(session.id))


def start_downgrade_to_free(*, account: Account, user: User, return_url: str) -> Redirect:
    """Going back to the free plan is cancelling the subscription, in the portal."""
    current = live_subscription(account)
    if current is None:
        raise CheckoutError("You have no paid subscription to cancel.")
    return open_portal(
        account=account,
        user=user,
        return_url=return_url,
        flow={
            "type": "subscription_cancel",
            "subscription_cancel": {"subscription": current.stripe_subscription_id},
        },
    )


def open_portal(
    *, account: Account, user: User, return_url: str, flow: dict[str, object] | None = None
) -> Redirect:
    customer_id = ensure_customer(account=account, user=user)
    params: dict[str, object] = {"customer": customer_id, "return_url": return_url}
    if flow:
        params["flow_data"] = flow
    session = stripe_api.create_portal_session(params)
    return Redirect(url=str(session.url), session_id=str(session.id))
