"""Sign-up, log-in, passwords, the dashboard, the model catalog and switching plans."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts import keys
from accounts.models import Account, ApiKey, User
from accounts.services import account_for
from billing.models import Plan
from gateway import catalog
from tests import factories

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_it_signs_up_and_logs_the_person_in(client: Client) -> None:
    factories.plan()
    response = client.post(
        "/signup/",
        {
            "email": "Dana@Example.com",
            "password1": "a-long pass phrase",
            "password2": "a-long pass phrase",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    user = User.objects.get(email="dana@example.com")
    assert account_for(user).plan.slug == "test"
    dashboard = client.get("/dashboard/")
    assert dashboard.status_code == 200
    assert dashboard.context["user"] == user


def test_it_refuses_a_taken_email(client: Client, alice: User) -> None:
    response = client.post(
        "/signup/",
        {
            "email": "ALICE@example.com",
            "password1": "a-long pass phrase",
            "password2": "a-long pass phrase",
        },
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert User.objects.count() == 1


def test_it_refuses_a_weak_password(client: Client) -> None:
    response = client.post(
        "/signup/", {"email": "dana@example.com", "password1": "12345678", "password2": "12345678"}
    )
    assert response.status_code == 200
    assert "too common" in response.content.decode()
    assert not User.objects.filter(email="dana@example.com").exists()


def test_it_refuses_passwords_that_differ(client: Client) -> None:
    response = client.post(
        "/signup/",
        {"email": "dana@example.com", "password1": "a-long pass phrase", "password2": "another"},
    )
    assert "do not match" in response.content.decode()
    assert not User.objects.exists()


def test_it_logs_in_and_out(client: Client, alice: User) -> None:
    response = client.post("/login/", {"username": "Alice@Example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_it_rejects_a_wrong_password(client: Client, alice: User) -> None:
    response = client.post("/login/", {"username": "alice@example.com", "password": "nope"})
    assert response.status_code == 200
    assert "correct" in response.content.decode()


def test_it_changes_the_password(signed_in: Client, alice: User) -> None:
    response = signed_in.post(
        "/password/change/",
        {
            "old_password": PASSWORD,
            "new_password1": "another long phrase",
            "new_password2": "another long phrase",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/password/change/done/"
    alice.refresh_from_db()
    assert alice.check_password("another long phrase")


def test_it_emails_a_password_reset_link_that_works(client: Client, alice: User) -> None:
    response = client.post("/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert "Token Factory" in message.subject
    link = re.search(r"https?://[^/]+(/password/reset/\S+/)", str(message.body))
    assert link is not None
    form = client.get(link.group(1), follow=True)
    assert form.status_code == 200
    assert form.context["validlink"]
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a brand new phrase", "new_password2": "a brand new phrase"},
    )
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("a brand new phrase")


def test_it_sends_no_reset_email_for_an_unknown_address(client: Client, alice: User) -> None:
    response = client.post("/password/reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert mail.outbox == []


def test_the_dashboard_shows_plan_limits_balance_and_base_urls(
    signed_in: Client, alice: User
) -> None:
    account = account_for(alice)
    Account.objects.filter(pk=account.pk).update(balance_micros=12_340_000)
    page = signed_in.get("/dashboard/").content.decode()
    assert "30" in page and "10,000" in page  # Test plan: 30 RPM, 10K TPM
    assert "1,000,000 tokens per 24-hour window" in page
    assert "$12.34" in page
    assert "http://testserver/openai/v1/" in page
    assert "http://testserver/anthropic/" in page
    assert "from openai import OpenAI" in page
    assert "import anthropic" in page


def test_the_dashboard_needs_a_login(client: Client) -> None:
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_catalog_lists_the_seeded_models(client: Client) -> None:
    catalog.seed(simulator_url="http://127.0.0.1:9")
    response = client.get("/models/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "deepseek-ai/DeepSeek-R1-0528" in page
    assert "meta-llama/Llama-3.3-70B-Instruct" in page
    assert "UltraFast" in page
    assert len(response.context["rows"]) >= 60


def test_the_catalog_filters_by_kind_and_capability(client: Client) -> None:
    factories.model("chat-tools", supports_tools=True, input_price_micros=150_000)
    factories.model("chat-plain", supports_tools=False, supports_vision=False)
    factories.model("embed-1", kind="embedding", supports_tools=False, output_price_micros=None)
    ids = lambda r: {row.model.model_id for row in r.context["rows"]}  # noqa: E731
    assert ids(client.get("/models/?kind=embedding")) == {"embed-1"}
    assert ids(client.get("/models/?kind=chat&cap=tools")) == {"chat-tools"}
    assert ids(client.get("/models/?q=plain")) == {"chat-plain"}
    page = client.get("/models/?q=chat-tools").content.decode()
    assert "$0.15" in page and "$2.00" in page


def test_it_switches_to_a_public_plan(signed_in: Client, alice: User) -> None:
    page = signed_in.get("/plans/").content.decode()
    assert "Token Pro" in page
    assert 'data-plan="enterprise"' not in page
    response = signed_in.post("/plans/", {"plan": "pro"})
    assert response.status_code == 302
    assert account_for(alice).plan.slug == "pro"
    assert "You are now on Token Pro" in signed_in.get("/plans/").content.decode()


def test_a_plan_switch_goes_through_assign_plan_and_reloads_every_live_key(
    signed_in: Client,
    alice: User,
    key_announcements: list[list[str]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    account = account_for(alice)
    first = keys.issue(account=account, name="one").key
    second = keys.issue(account=account, name="two").key
    keys.revoke(key=keys.issue(account=account, name="gone").key)
    key_announcements.clear()

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post("/plans/", {"plan": "pro"})

    assert account_for(alice).plan.slug == "pro"
    # One announcement with the live keys: what billing.plans.assign_plan sends.
    assert key_announcements == [sorted([first.key_hash, second.key_hash])]


def test_with_billing_on_a_paid_plan_goes_through_the_billing_page(
    signed_in: Client, alice: User, settings: Any
) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_123"
    response = signed_in.post("/plans/", {"plan": "pro"})
    assert response.status_code == 302
    assert response["Location"] == "/billing/"
    assert account_for(alice).plan.slug == "test", "no paid plan without a payment"


def test_it_refuses_an_unknown_or_private_plan(signed_in: Client, alice: User) -> None:
    for slug in ("platinum", "enterprise"):
        response = signed_in.post("/plans/", {"plan": slug})
        assert response.status_code == 400
        assert f"no plan called &#x27;{slug}&#x27;" in response.content.decode()
    assert account_for(alice).plan.slug == "test"


def test_the_plan_switch_needs_csrf(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/plans/", {"plan": "pro"}).status_code == 403
    assert account_for(alice).plan.slug == "test"


def test_pages_render_for_visitors(client: Client, db: Any) -> None:
    factories.plan()
    for url in ("/", "/signup/", "/login/", "/password/reset/", "/models/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Token Factory" in response.content
    assert Plan.objects.filter(is_public=True).count() == 4


def test_the_keys_page_shows_a_new_key_once(signed_in: Client, alice: User) -> None:
    response = signed_in.post("/keys/", {"name": "backend", "environment": "stag"})
    assert response.status_code == 302
    key = ApiKey.objects.get(account=account_for(alice))
    page = signed_in.get("/keys/")
    assert page["Cache-Control"] == "no-store"
    secret = page.context["reveal"]["secret"]
    assert secret.startswith("tf-stag-") and keys.verify(secret) == key
    assert secret in page.content.decode()
    again = signed_in.get("/keys/").content.decode()
    assert secret not in again
    assert key.hint in again


def test_no_server_side_store_holds_a_new_key_before_it_is_shown(
    signed_in: Client, alice: User
) -> None:
    from django.contrib.sessions.models import Session

    response = signed_in.post("/keys/", {"name": "backend", "environment": "prod"})
    assert response.status_code == 302
    pad = response.cookies["tf_reveal_pad"]
    assert pad["httponly"] and pad["samesite"] == "Strict" and pad["path"] == "/keys/"
    # Every stored session, decoded: the key is not in any of them, whole or in hex.
    stored = " ".join(str(s.get_decoded()) for s in Session.objects.all())
    page = signed_in.get("/keys/")
    secret = page.context["reveal"]["secret"]
    assert secret.startswith("tf-prod-")
    assert secret not in stored and secret.encode().hex() not in stored
    assert secret not in pad.value and secret.encode().hex() not in pad.value
    # The page took both halves: the cookie is cleared, and a reload shows only the hint.
    assert page.cookies["tf_reveal_pad"]["max-age"] == 0
    assert secret not in signed_in.get("/keys/").content.decode()


def test_a_new_key_is_not_shown_without_the_browsers_half(signed_in: Client) -> None:
    signed_in.post("/keys/", {"name": "backend", "environment": "prod"})
    del signed_in.cookies["tf_reveal_pad"]
    page = signed_in.get("/keys/")
    assert page.context["reveal"] is None
    assert "could not be shown" in page.content.decode()
    assert re.search(r"tf-prod-[a-z0-9]{40}", page.content.decode()) is None


def test_the_keys_page_refuses_caps_above_the_plan(signed_in: Client) -> None:
    response = signed_in.post("/keys/", {"name": "x", "environment": "prod", "rpm_limit": 31})
    assert response.status_code == 400
    assert "less than or equal to 30" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_keys_page_rotates_and_revokes(signed_in: Client, alice: User) -> None:
    key, secret = factories.api_key(account_for(alice))
    response = signed_in.post(f"/keys/{key.pk}/rotate/", {"grace_hours": 0})
    assert response.status_code == 302
    new_secret = signed_in.get("/keys/").context["reveal"]["secret"]
    assert keys.verify(secret) is None and keys.verify(new_secret) is not None
    successor = keys.verify(new_secret)
    assert successor is not None
    # Without JavaScript, a revoke without confirmation shows the confirmation page.
    confirm = signed_in.post(f"/keys/{successor.pk}/revoke/")
    assert confirm.status_code == 200
    assert keys.verify(new_secret) is not None
    done = signed_in.post(f"/keys/{successor.pk}/revoke/", {"confirm": "yes"})
    assert done.status_code == 302
    assert keys.verify(new_secret) is None


def test_nobody_sees_or_touches_anothers_keys(signed_in: Client, charlie: User) -> None:
    key, secret = factories.api_key(account_for(charlie), name="charlie's secret project")
    assert "charlie&#x27;s secret project" not in signed_in.get("/keys/").content.decode()
    assert signed_in.post(f"/keys/{key.pk}/rotate/", {"grace_hours": 1}).status_code == 404
    assert signed_in.post(f"/keys/{key.pk}/revoke/", {"confirm": "yes"}).status_code == 404
    assert keys.verify(secret) is not None


def test_the_pages_say_which_limits_are_per_key_and_which_per_account(
    signed_in: Client, alice: User
) -> None:
    keys_page = " ".join(signed_in.get("/keys/").content.decode().split())
    assert "30 RPM and 10,000 TPM for each key on its own" in keys_page
    assert "60 RPM and 20,000 TPM for all your keys together" in keys_page
    assert "up to 3 active keys" in keys_page
    plans_page = " ".join(signed_in.get("/plans/").content.decode().split())
    assert "30 requests per minute per key, 60 for the account (all keys together)" in plans_page
    assert "10,000 tokens per minute per key, 20,000 for the account" in plans_page
    assert "Up to 3 active keys" in plans_page
    home = " ".join(signed_in.get("/dashboard/").content.decode().split())
    assert "60 RPM · 20,000 TPM" in home and "all your keys together" in home
