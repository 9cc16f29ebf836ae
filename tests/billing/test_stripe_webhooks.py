"""Stripe webhooks posted to the running server, signed with the real stripe library's scheme:
applied exactly once, refused when the signature is wrong, and right in the end when they arrive
out of order. Subscription objects come from localstripe through the real stripe library."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine

from accounts.models import Account
from billing import checkout, money, tasks, webhooks
from billing.models import LedgerEntry, Plan, StripeEvent, Subscription
from tests import factories
from tests.billing.fake_stripe import (  # noqa: F401
    FakeStripe,
    _stripe_on_fixture,
    _stripe_servers_fixture,
    client,
    event,
    signed,
)


@pytest.fixture
def hook(transactional_db: None, gateway_server: Any, stripe_on: FakeStripe) -> Any:
    """Posts an event (or raw bytes) to the running server's webhook, signed unless told."""

    def post(
        payload: dict[str, Any] | str, *, signature: str | None = "sign", **sign: Any
    ) -> httpx.Response:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers["Stripe-Signature"] = signed(body, **sign)
        elif signature is not None:
            headers["Stripe-Signature"] = signature
        return httpx.post(
            f"{gateway_server.url}/billing/stripe/webhook/", content=body, headers=headers
        )

    return post


@pytest.fixture
def account(transactional_db: None) -> Account:
    return factories.account(owner=factories.UserFactory.create(email="alice@example.com"))


def _topup_session(fake: FakeStripe, account: Account, dollars: int) -> dict[str, Any]:
    """A real Checkout Session, created the way the billing page creates it, then paid."""
    owner = account.members.get()
    started = checkout.start_topup(
        account=account,
        user=owner,
        amount_micros=money.from_cents(dollars * 100),
        success_url="http://testserver/billing/success/",
        cancel_url="http://testserver/billing/",
    )
    return fake.completed(started.session_id)


def _balance(account: Account) -> int:
    return Account.objects.values_list("balance_micros", flat=True).get(pk=account.pk)


# --- top-ups -----------------------------------------------------------------------------------


def test_a_valid_checkout_event_credits_once_and_a_replay_credits_nothing_more(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    session = _topup_session(stripe_on, account, 25)
    payload = json.dumps(event("checkout.session.completed", session))
    header = signed(payload)

    first = hook(payload, signature=header)
    replay = hook(payload, signature=header)

    assert first.status_code == 200 and first.json()["outcome"] == "credited"
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert _balance(account) == 25_000_000
    [entry] = LedgerEntry.objects.filter(account=account)
    assert entry.kind == LedgerEntry.Kind.TOPUP
    assert entry.amount_micros == 25_000_000
    assert entry.idempotency_key == f"stripe:checkout:{session['id']}"
    assert session["id"] in entry.reference and session["payment_intent"] in entry.reference
    assert StripeEvent.objects.filter(account=account).count() == 1


def test_a_new_event_for_an_already_credited_session_credits_nothing_more(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    session = _topup_session(stripe_on, account, 10)

    hook(event("checkout.session.completed", session))
    again = hook(event("checkout.session.async_payment_succeeded", session))

    assert again.status_code == 200 and again.json()["outcome"] == "duplicate session"
    assert _balance(account) == 10_000_000
    assert LedgerEntry.objects.count() == 1
    assert StripeEvent.objects.count() == 2


def test_an_unpaid_session_credits_nothing_until_the_payment_succeeds(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    session = _topup_session(stripe_on, account, 10)
    pending = {**session, "payment_status": "unpaid"}

    waiting = hook(event("checkout.session.completed", pending))
    assert waiting.json()["outcome"] == "awaiting payment" and _balance(account) == 0

    paid = hook(event("checkout.session.async_payment_succeeded", session))
    assert paid.json()["outcome"] == "credited" and _balance(account) == 10_000_000


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "tampered body", "no header", "too old", "garbage header", "other scheme"],
)
def test_a_bad_signature_gets_400_and_changes_nothing(
    hook: Any, account: Account, stripe_on: FakeStripe, how: str
) -> None:
    payload = json.dumps(
        event("checkout.session.completed", _topup_session(stripe_on, account, 25))
    )
    if how == "wrong secret":
        response = hook(payload, secret="whsec_somebody_else")
    elif how == "tampered body":
        response = hook(payload.replace("2500", "250000"), signature=signed(payload))
    elif how == "no header":
        response = hook(payload, signature=None)
    elif how == "too old":
        response = hook(payload, timestamp=int(time.time()) - 600)
    elif how == "garbage header":
        response = hook(payload, signature="not a signature")
    else:
        response = hook(payload, signature=signed(payload).replace("v1=", "v0="))

    assert response.status_code == 400
    assert _balance(account) == 0
    assert LedgerEntry.objects.count() == 0
    assert StripeEvent.objects.count() == 0


def test_webhooks_are_refused_when_no_secret_is_configured(
    hook: Any, account: Account, stripe_on: FakeStripe, settings: Any
) -> None:
    session = _topup_session(stripe_on, account, 25)
    settings.STRIPE_WEBHOOK_SECRET = ""

    response = hook(event("checkout.session.completed", session))

    assert response.status_code == 400 and _balance(account) == 0


def test_a_top_up_for_someone_elses_customer_credits_nobody(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    session = _topup_session(stripe_on, account, 25)
    stranger = factories.account()
    forged = {**session, "metadata": {**session["metadata"], "account_id": str(stranger.pk)}}
    Account.objects.filter(pk=stranger.pk).update(stripe_customer_id="cus_stranger")

    response = hook(event("checkout.session.completed", forged))

    assert response.json()["outcome"] == "no account"
    assert _balance(account) == 0 and _balance(stranger) == 0


def test_unknown_event_types_are_recorded_and_acknowledged(hook: Any, account: Account) -> None:
    response = hook(event("customer.created", {"id": "cus_x", "object": "customer"}))

    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert StripeEvent.objects.get().type == "customer.created"


MALFORMED_SESSIONS: dict[str, dict[str, Any]] = {
    "amount_total not a number": {"amount_total": "abc"},
    "amount_total a float": {"amount_total": 2500.5},
    "amount_total a boolean": {"amount_total": True},
    "amount_total 1e18 cents": {"amount_total": 10**18},
    "amount_total negative": {"amount_total": -2500},
    "metadata a list": {"metadata": ["account_id", "kind"]},
    "metadata a string": {"metadata": "topup"},
    "a null session id": {"id": None},
    "an empty session id": {"id": ""},
    "a numeric session id": {"id": 12345},
}


@pytest.mark.parametrize("how", list(MALFORMED_SESSIONS))
def test_a_signed_but_malformed_checkout_event_gets_400_and_credits_nothing(
    hook: Any, account: Account, stripe_on: FakeStripe, how: str, caplog: Any
) -> None:
    session = {**_topup_session(stripe_on, account, 25), **MALFORMED_SESSIONS[how]}

    response = hook(event("checkout.session.completed", session))

    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert _balance(account) == 0
    assert LedgerEntry.objects.count() == 0
    assert StripeEvent.objects.count() == 0
    assert not LedgerEntry.objects.filter(idempotency_key="stripe:checkout:None").exists()


@pytest.mark.parametrize(
    "created",
    ["1700000000", 1.7e9, None, True, -1, "in a day", int(time.time()) + 86_400, 10**20],
)
def test_an_event_with_a_bad_created_time_gets_400_and_changes_nothing(
    hook: Any, account: Account, stripe_on: FakeStripe, created: Any
) -> None:
    payload = event("checkout.session.completed", _topup_session(stripe_on, account, 25))
    payload["created"] = created

    response = hook(payload)

    assert response.status_code == 400, response.text
    assert _balance(account) == 0 and StripeEvent.objects.count() == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "evt_x", "type": "checkout.session.completed", "data": []},
        {"id": "evt_x", "type": "checkout.session.completed", "data": {"object": "x"}},
        {"id": ["evt_x"], "type": "checkout.session.completed", "data": {"object": {}}},
        {"id": "evt_x", "type": 7, "data": {"object": {}}},
    ],
)
def test_a_signed_event_of_the_wrong_shape_gets_400(
    hook: Any, account: Account, payload: dict[str, Any]
) -> None:
    response = hook({**payload, "created": int(time.time())})

    assert response.status_code == 400, response.text
    assert StripeEvent.objects.count() == 0


def test_a_signature_made_a_day_in_the_future_is_refused(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    payload = json.dumps(
        event("checkout.session.completed", _topup_session(stripe_on, account, 25))
    )

    response = hook(payload, timestamp=int(time.time()) + 86_400)

    assert response.status_code == 400
    assert _balance(account) == 0 and StripeEvent.objects.count() == 0
    # Within Stripe's five minutes either way (clocks drift), it is accepted.
    assert hook(payload, timestamp=int(time.time()) + 60).json()["outcome"] == "credited"


def test_a_malformed_subscription_event_gets_400_and_changes_nothing(
    hook: Any, account: Account
) -> None:
    factories.plan()
    bad = {
        "id": "sub_x",
        "object": "subscription",
        "customer": "cus_x",
        "status": "active",
        "metadata": ["not", "a", "dict"],
        "current_period_end": "soon",
    }
    response = hook(event("customer.subscription.updated", bad))

    assert response.status_code == 400, response.text
    assert StripeEvent.objects.count() == 0 and not Subscription.objects.exists()


# --- subscriptions ------------------------------------------------------------------------------


class Stripe:
    """Plans, a customer and subscriptions in localstripe, made through the real stripe library."""

    def __init__(self, fake: FakeStripe, account: Account) -> None:
        self.api = client(fake)
        product = self.api.v1.products.create(params={"name": "Token Factory"})
        self.prices: dict[str, str] = {}
        factories.plan()
        for slug, cents in (("pro", 2000), ("max", 10000)):
            price_id = f"price_{slug}_{secrets.token_hex(4)}"
            self.api.v1.plans.create(
                params={
                    "id": price_id,
                    "amount": cents,
                    "currency": "usd",
                    "interval": "month",
                    "product": product.id,
                }
            )
            Plan.objects.filter(slug=slug).update(stripe_price_id=price_id)
            self.prices[slug] = price_id
        owner = account.members.get()
        self.customer = checkout.ensure_customer(account=account, user=owner)
        card = self.api.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2040,
                    "cvc": "123",
                },
            }
        )
        self.api.v1.payment_methods.attach(card.id, params={"customer": self.customer})
        self.api.v1.customers.update(
            self.customer, params={"invoice_settings": {"default_payment_method": card.id}}
        )
        self.account_id = str(account.pk)

    def subscribe(self, slug: str) -> dict[str, Any]:
        sub = self.api.v1.subscriptions.create(
            params={
                "customer": self.customer,
                "items": [{"plan": self.prices[slug]}],
                "metadata": {"account_id": self.account_id},
            }
        )
        return sub.to_dict()

    def change(self, sub: dict[str, Any], slug: str) -> dict[str, Any]:
        item = sub["items"]["data"][0]["id"]
        updated = self.api.v1.subscriptions.update(
            sub["id"], params={"items": [{"id": item, "plan": self.prices[slug]}]}
        )
        return updated.to_dict()

    def cancel(self, sub: dict[str, Any]) -> dict[str, Any]:
        return self.api.v1.subscriptions.cancel(sub["id"]).to_dict()

    def invoice(self, sub: dict[str, Any]) -> dict[str, Any]:
        return self.api.v1.invoices.retrieve(sub["latest_invoice"]).to_dict()


def _plan(account: Account) -> str:
    return Account.objects.select_related("plan").get(pk=account.pk).plan.slug


def test_subscription_events_move_the_plan(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("pro")
    t = int(time.time())

    assert hook(event("customer.subscription.created", sub, created=t)).status_code == 200
    assert _plan(account) == "pro"

    hook(event("customer.subscription.updated", fake.change(sub, "max"), created=t + 10))
    assert _plan(account) == "max"

    hook(event("customer.subscription.deleted", fake.cancel(sub), created=t + 20))
    assert _plan(account) == "test"
    row = Subscription.objects.get(account=account)
    assert row.status == "canceled" and row.stripe_subscription_id == sub["id"]


def test_a_subscription_moves_the_plan_through_assign_plan_and_reloads_the_keys(
    hook: Any, account: Account, stripe_on: FakeStripe, key_announcements: list[list[str]]
) -> None:
    key, _ = factories.api_key(account)
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("pro")
    key_announcements.clear()

    assert hook(event("customer.subscription.created", sub)).status_code == 200

    assert _plan(account) == "pro"
    # One announcement with the account's live keys: what billing.plans.assign_plan sends.
    assert key_announcements == [[key.key_hash]]


def test_subscription_events_out_of_order_end_in_the_right_plan(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    fake = Stripe(stripe_on, account)
    created = fake.subscribe("pro")
    upgraded = fake.change(created, "max")
    t = int(time.time())

    # Stripe sent created, then updated; they arrive the other way round.
    hook(event("customer.subscription.updated", upgraded, created=t + 10))
    late = hook(event("customer.subscription.created", created, created=t))

    assert late.json()["outcome"] == "stale: a newer event was applied"
    assert _plan(account) == "max"

    # Cancelled, and an update from before the cancellation turns up afterwards.
    canceled = fake.cancel(created)
    hook(event("customer.subscription.deleted", canceled, created=t + 30))
    hook(event("customer.subscription.updated", upgraded, created=t + 20))
    assert _plan(account) == "test"

    # Even a same-second update cannot bring an ended subscription back.
    revived = hook(event("customer.subscription.updated", upgraded, created=t + 30))
    assert revived.json()["outcome"] == "stale: this subscription has ended"
    assert _plan(account) == "test"


def test_a_replayed_subscription_event_changes_nothing(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("pro")
    payload = json.dumps(event("customer.subscription.created", sub))

    hook(payload)
    Account.objects.filter(pk=account.pk).update(plan=Plan.objects.get(slug="test"))
    replay = hook(payload)

    assert replay.json()["outcome"] == "duplicate"
    assert _plan(account) == "test"


def test_a_failed_payment_leaves_a_grace_period_then_falls_back_to_test(
    hook: Any, account: Account, stripe_on: FakeStripe
) -> None:
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("pro")
    invoice = fake.invoice(sub)
    t = int(time.time())
    hook(event("customer.subscription.created", sub, created=t))

    failed = hook(event("invoice.payment_failed", invoice, created=t + 5))

    assert failed.status_code == 200
    row = Subscription.objects.get(account=account)
    failed_at = datetime.fromtimestamp(t + 5, tz=UTC)
    assert row.status == "past_due"
    assert row.grace_until == failed_at + timedelta(days=7)
    assert _plan(account) == "pro"

    # The task runs every hour; nothing happens until the grace period is over.
    with time_machine.travel(failed_at + timedelta(days=6), tick=False):
        assert tasks.end_grace_periods.apply().get() == 0
    assert _plan(account) == "pro"
    with time_machine.travel(failed_at + timedelta(days=7, seconds=1), tick=False):
        assert tasks.end_grace_periods.apply().get() == 1
        assert tasks.end_grace_periods.apply().get() == 0
    assert _plan(account) == "test"
    assert Subscription.objects.get(account=account).status == "unpaid"

    # Paying the invoice later puts the account back on the plan it pays for. (Eight days on:
    # an event created in the future is refused.)
    with time_machine.travel(failed_at + timedelta(days=8), tick=True):
        assert hook(event("invoice.paid", invoice, created=t + 8 * 86400)).status_code == 200
    assert _plan(account) == "pro"
    row = Subscription.objects.get(account=account)
    assert row.status == "active" and row.grace_until is None


def test_a_payment_within_the_grace_period_keeps_the_plan(
    hook: Any, account: Account, stripe_on: FakeStripe, settings: Any
) -> None:
    settings.BILLING_GRACE_DAYS = 3
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("max")
    invoice = fake.invoice(sub)
    t = int(time.time())
    hook(event("customer.subscription.created", sub, created=t))
    hook(event("invoice.payment_failed", invoice, created=t + 5))
    assert Subscription.objects.get(account=account).grace_until == datetime.fromtimestamp(
        t + 5, tz=UTC
    ) + timedelta(days=3)

    hook(event("invoice.paid", invoice, created=t + 60))
    # A failure notice older than the payment arrives late and is ignored.
    stale = hook(event("invoice.payment_failed", invoice, created=t + 30))

    assert stale.json()["outcome"] == "stale: a newer event was applied"
    row = Subscription.objects.get(account=account)
    assert row.grace_until is None and row.status == "active"
    assert webhooks.end_grace(at=datetime.fromtimestamp(t, tz=UTC) + timedelta(days=30)) == 0
    assert _plan(account) == "max"
