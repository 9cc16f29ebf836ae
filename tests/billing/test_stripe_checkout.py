"""Top-ups, subscriptions and the portal go to Stripe (localstripe plus the Checkout fake) through
the real stripe library, with the right amounts, customer and metadata."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Account
from billing import ledger, money
from billing.models import LedgerEntry, Plan, Subscription
from tests import factories
from tests.billing.fake_stripe import (  # noqa: F401
    FakeStripe,
    _stripe_on_fixture,
    _stripe_servers_fixture,
    client,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(db: None) -> Any:
    user = factories.UserFactory.create(email="alice@example.com")
    factories.account(owner=user)
    return user


@pytest.fixture
def browser(owner: Any) -> Client:
    c = Client()
    c.force_login(owner)
    return c


def _account(user: Any) -> Account:
    return Account.objects.get(memberships__user=user)


def _priced_plans() -> None:
    factories.plan()
    Plan.objects.filter(slug="pro").update(stripe_price_id="price_pro_monthly")
    Plan.objects.filter(slug="max").update(stripe_price_id="price_max_monthly")


def test_it_creates_a_payment_session_for_a_preset_top_up(
    browser: Client, owner: Any, stripe_on: FakeStripe
) -> None:
    response = browser.post("/billing/topup/", {"amount": "25.00"})

    assert response.status_code == 303
    [sent] = stripe_on.sent("/v1/checkout/sessions")
    [session] = stripe_on.sessions.values()
    assert response["Location"] == session["url"]
    account = _account(owner)
    assert sent.form["mode"] == "payment"
    assert sent.form["line_items[0][price_data][unit_amount]"] == "2500"
    assert sent.form["line_items[0][price_data][currency]"] == "usd"
    assert sent.form["line_items[0][quantity]"] == "1"
    assert sent.form["customer"] == account.stripe_customer_id
    assert sent.form["metadata[account_id]"] == str(account.pk)
    assert sent.form["metadata[kind]"] == "topup"
    assert sent.form["metadata[amount_micros]"] == "25000000"
    assert sent.form["client_reference_id"] == str(account.pk)
    assert sent.form["success_url"].endswith("/billing/success/?session_id={CHECKOUT_SESSION_ID}")
    assert sent.headers["authorization"] == "Bearer sk_test_tokenfactory_12345"
    # Nothing is credited until Stripe's webhook says the payment happened.
    assert account.balance_micros == 0


def test_it_makes_the_stripe_customer_lazily_and_only_once(
    browser: Client, owner: Any, stripe_on: FakeStripe
) -> None:
    assert _account(owner).stripe_customer_id == ""

    browser.post("/billing/topup/", {"amount": "10.00"})
    browser.post("/billing/topup/", {"amount": "100.00"})

    assert len(stripe_on.sent("/v1/customers")) == 1
    account = _account(owner)
    customer = client(stripe_on).v1.customers.retrieve(account.stripe_customer_id)
    assert customer.email == "alice@example.com"
    assert customer.metadata is not None
    assert customer.metadata["account_id"] == str(account.pk)
    sessions = stripe_on.sent("/v1/checkout/sessions")
    assert [s.form["customer"] for s in sessions] == [account.stripe_customer_id] * 2
    assert [s.form["line_items[0][price_data][unit_amount]"] for s in sessions] == [
        "1000",
        "10000",
    ]


def test_it_takes_a_custom_amount_in_whole_cents(browser: Client, stripe_on: FakeStripe) -> None:
    response = browser.post("/billing/topup/", {"amount": "$12.34"})

    assert response.status_code == 303
    [sent] = stripe_on.sent("/v1/checkout/sessions")
    assert sent.form["line_items[0][price_data][unit_amount]"] == "1234"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("4.99", "The smallest top-up is $5.00."),
        ("0", "The smallest top-up is $5.00."),
        ("ten dollars", "Enter an amount in dollars, like 25 or 12.50."),
        ("", "This field is required."),
        ("12.345", "A top-up must be a whole number of cents."),
    ],
)
def test_it_refuses_a_top_up_it_cannot_charge(
    browser: Client, stripe_on: FakeStripe, amount: str, message: str
) -> None:
    response = browser.post("/billing/topup/", {"amount": amount})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert stripe_on.requests == []


def test_it_subscribes_through_checkout_in_subscription_mode(
    browser: Client, owner: Any, stripe_on: FakeStripe
) -> None:
    _priced_plans()

    response = browser.post("/billing/subscribe/", {"plan": "pro"})

    assert response.status_code == 303
    [sent] = stripe_on.sent("/v1/checkout/sessions")
    account = _account(owner)
    assert sent.form["mode"] == "subscription"
    assert sent.form["line_items[0][price]"] == "price_pro_monthly"
    assert sent.form["customer"] == account.stripe_customer_id
    assert sent.form["metadata[plan]"] == "pro"
    assert sent.form["subscription_data[metadata][account_id]"] == str(account.pk)
    # The plan moves when Stripe's subscription events arrive, not now.
    assert account.plan.slug == "test"


def test_it_changes_a_paid_plan_in_the_portal_instead_of_a_second_subscription(
    browser: Client, owner: Any, stripe_on: FakeStripe
) -> None:
    _priced_plans()
    account = _account(owner)
    Account.objects.filter(pk=account.pk).update(
        stripe_customer_id="cus_existing", plan=Plan.objects.get(slug="pro")
    )
    Subscription.objects.create(
        account=account,
        status="active",
        plan=Plan.objects.get(slug="pro"),
        stripe_subscription_id="sub_123",
    )

    response = browser.post("/billing/subscribe/", {"plan": "max"})

    assert response.status_code == 303
    assert stripe_on.sent("/v1/checkout/sessions") == []
    [sent] = stripe_on.sent("/v1/billing_portal/sessions")
    assert response["Location"].startswith(f"{stripe_on.url}/portal/bps_test_")
    assert sent.form["customer"] == "cus_existing"
    assert sent.form["flow_data[type]"] == "subscription_update"
    assert sent.form["flow_data[subscription_update][subscription]"] == "sub_123"

    browser.post("/billing/subscribe/", {"plan": "test"})
    cancel = stripe_on.sent("/v1/billing_portal/sessions")[-1]
    assert cancel.form["flow_data[type]"] == "subscription_cancel"


def test_it_opens_the_customer_portal_for_the_accounts_customer(
    browser: Client, owner: Any, stripe_on: FakeStripe
) -> None:
    response = browser.post("/billing/portal/")

    assert response.status_code == 303
    [sent] = stripe_on.sent("/v1/billing_portal/sessions")
    assert sent.form["customer"] == _account(owner).stripe_customer_id
    assert sent.form["return_url"] == "http://testserver/billing/"


def test_it_says_billing_is_off_without_stripe_keys(browser: Client, settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""

    page = browser.get("/billing/")
    response = browser.post("/billing/topup/", {"amount": "25"}, follow=True)

    assert page.status_code == 200
    assert "Billing is off on this server." in page.content.decode()
    assert "/billing/topup/" not in page.content.decode()
    assert "Billing is off on this server: an operator credits balances." in (
        response.content.decode()
    )


def test_every_billing_post_needs_a_csrf_token(owner: Any, stripe_on: FakeStripe) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)

    for path in ("/billing/topup/", "/billing/subscribe/", "/billing/portal/"):
        assert strict.post(path, {"amount": "25", "plan": "pro"}).status_code == 403
    assert stripe_on.requests == []


def test_it_needs_a_login(client: Client) -> None:
    response = client.get("/billing/")

    assert response.status_code == 302
    assert "/billing/" in response["Location"]


def test_it_shows_the_plan_meter_balance_and_only_the_own_ledger(
    browser: Client, owner: Any, charlie: Any
) -> None:
    mine = _account(owner)
    ledger.credit(account=mine, amount_micros=money.from_cents(2500), idempotency_key="t:mine")
    theirs = _account(charlie)
    other = ledger.credit(
        account=theirs,
        amount_micros=money.from_cents(9900),
        idempotency_key="t:theirs",
        description="charlie's secret top-up",
    )
    assert other is not None

    page = browser.get("/billing/").content.decode()

    assert "$25.00" in page
    assert "charlie&#x27;s secret top-up" not in page and "$99.00" not in page
    assert "Test" in page and "1,000,000" in page  # the plan and its window
    assert browser.get(f"/billing/receipts/{other.pk}/").status_code == 404


def test_it_pages_through_the_ledger(browser: Client, owner: Any) -> None:
    account = _account(owner)
    for n in range(25):
        ledger.credit(
            account=account,
            amount_micros=money.from_cents(100),
            idempotency_key=f"t:{n}",
            description=f"credit number {n:02d}",
        )

    first = browser.get("/billing/").content.decode()
    second = browser.get("/billing/?page=2").content.decode()

    assert "credit number 24" in first and "credit number 05" in first
    assert "credit number 04" not in first
    assert "credit number 04" in second and "credit number 00" in second
    assert "Page 2 of 2" in second


def test_the_receipt_shows_a_top_up(browser: Client, owner: Any) -> None:
    entry = ledger.credit(
        account=_account(owner),
        amount_micros=money.from_cents(2500),
        idempotency_key="stripe:checkout:cs_test_receipt",
        reference="cs_test_receipt pi_test_receipt",
    )
    assert entry is not None

    page = browser.get(f"/billing/receipts/{entry.pk}/").content.decode()

    assert "$25.00" in page and "pi_test_receipt" in page
    assert LedgerEntry.objects.count() == 1
