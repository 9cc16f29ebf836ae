"""Stripe's webhooks in the audit log: a real signed delivery to the running server leaves one
event done by the webhook (labelled with the event id), and a replay leaves nothing more."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from accounts.models import Account, AuditEvent
from tests import factories
from tests.billing.fake_stripe import (  # noqa: F401 (fixtures)
    FakeStripe,
    _stripe_on_fixture,
    _stripe_servers_fixture,
    event,
    signed,
)
from tests.billing.test_stripe_webhooks import Stripe, _topup_session


@pytest.fixture
def hook(transactional_db: None, gateway_server: Any, stripe_on: FakeStripe) -> Any:
    """Posts an event (or its exact bytes, with a given signature) to the running server."""

    def post(payload: dict[str, Any] | str, *, signature: str = "") -> httpx.Response:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        signature = signature or signed(body)
        headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
        return httpx.post(
            f"{gateway_server.url}/billing/stripe/webhook/", content=body, headers=headers
        )

    return post


@pytest.fixture
def account(transactional_db: None) -> Account:
    return factories.account(owner=factories.UserFactory.create(email="alice@example.com"))


def _row_text(e: AuditEvent) -> str:
    return json.dumps([e.actor_label, e.target_label, e.before, e.after, e.user_agent], default=str)


def test_it_records_a_top_up_once_as_the_webhook(
    hook: Any,
    account: Account,
    stripe_on: FakeStripe,
    settings: Any,
) -> None:
    session = _topup_session(stripe_on, account, 25)
    delivered = event("checkout.session.completed", session)
    payload = json.dumps(delivered)
    header = signed(payload)

    assert hook(payload, signature=header).json()["outcome"] == "credited"
    assert hook(payload, signature=header).json()["outcome"] == "duplicate"

    [topup] = AuditEvent.objects.filter(action="billing.topup")
    assert (topup.actor_kind, topup.actor_label) == ("webhook", delivered["id"])
    assert topup.account_id == account.pk
    assert topup.after is not None and topup.after["amount_micros"] == 25_000_000
    assert topup.before == {"balance_micros": 0}
    text = _row_text(topup)
    assert settings.STRIPE_WEBHOOK_SECRET not in text and settings.STRIPE_SECRET_KEY not in text


def test_it_records_a_subscriptions_plan_change_as_the_webhook(
    hook: Any,
    account: Account,
    stripe_on: FakeStripe,
) -> None:
    fake = Stripe(stripe_on, account)
    sub = fake.subscribe("pro")
    delivered = event("customer.subscription.created", sub, created=int(time.time()))

    hook(delivered)
    hook(delivered)

    [moved] = AuditEvent.objects.filter(action="plan.changed")
    assert (moved.actor_kind, moved.actor_label) == ("webhook", delivered["id"])
    assert (moved.before, moved.after) == ({"plan": "test"}, {"plan": "pro"})
