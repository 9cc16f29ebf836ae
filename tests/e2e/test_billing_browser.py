"""The billing page in a real Chromium against the running ASGI app: top up from the page to
Stripe Checkout (the fake on loopback), then the signed webhook credits the balance the page
shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accounts.models import Account
from tests import factories
from tests.billing.fake_stripe import (  # noqa: F401
    FakeStripe,
    _stripe_on_fixture,
    _stripe_servers_fixture,
    event,
    signed,
)
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, skip_without_chromium
from tests.conftest import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()


def _alice() -> Account:
    return factories.account(owner=factories.UserFactory.create(email="alice@example.com"))


@pytest.fixture
def page(
    transactional_db: None, gateway_server: ServerThread, stripe_on: FakeStripe
) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    factories.plan()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=gateway_server.url)
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def _log_in(page: Any) -> None:
    page.goto("/login/?next=/billing/")
    page.locator("input[name=username]").fill("alice@example.com")
    page.locator("input[name=password]").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/billing/$"))


def test_it_tops_up_through_checkout_and_shows_the_credited_balance(
    page: Any, gateway_server: ServerThread, stripe_on: FakeStripe
) -> None:
    from playwright.sync_api import expect

    account = orm(_alice)
    _log_in(page)
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")

    # Too little is refused on the page, with the reason, and nothing goes to Stripe.
    page.get_by_label("Another amount").fill("4")
    page.get_by_role("button", name="Top up", exact=True).click()
    expect(page.get_by_test_id("topup-error")).to_have_text("The smallest top-up is $5.00.")
    assert stripe_on.sent("/v1/checkout/sessions") == []

    page.get_by_role("button", name="Top up $25").click()

    # The browser is now on Stripe's (fake) Checkout page for a $25.00 session.
    page.wait_for_url(re.compile(re.escape(stripe_on.url) + r"/pay/cs_test_"))
    expect(page.get_by_role("heading", name="Fake Stripe Checkout")).to_be_visible()
    [sent] = stripe_on.sent("/v1/checkout/sessions")
    assert sent.form["line_items[0][price_data][unit_amount]"] == "2500"
    assert sent.form["metadata[account_id]"] == str(account.pk)
    [session_id] = stripe_on.sessions
    expect(page.locator("#amount")).to_have_text("2500")

    # The customer pays; Stripe sends the signed webhook and then returns the browser.
    body = json.dumps(event("checkout.session.completed", stripe_on.completed(session_id)))
    answer = httpx.post(
        f"{gateway_server.url}/billing/stripe/webhook/",
        content=body,
        headers={"Stripe-Signature": signed(body), "Content-Type": "application/json"},
    )
    assert answer.status_code == 200
    success_url = sent.form["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
    page.goto(success_url)
    expect(page.get_by_test_id("credited")).to_contain_text("$25.00 was added to your balance")

    page.goto("/billing/")
    expect(page.get_by_test_id("balance")).to_have_text("$25.00")
    ledger = page.get_by_test_id("ledger")
    expect(ledger).to_contain_text("Top-up")
    expect(ledger).to_contain_text("+$25.00")
    expect(ledger).to_contain_text(session_id)
    page.get_by_role("link", name="receipt").first.click()
    expect(page.get_by_test_id("receipt-amount")).to_contain_text("$25.00")


def test_the_page_says_billing_is_off_without_stripe_keys(page: Any, settings: Any) -> None:
    from playwright.sync_api import expect

    settings.STRIPE_SECRET_KEY = ""
    orm(_alice)
    _log_in(page)

    expect(page.get_by_test_id("billing-off")).to_contain_text("Billing is off on this server.")
    expect(page.get_by_role("button", name="Top up $25")).to_have_count(0)
