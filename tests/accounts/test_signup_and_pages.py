"""Sign-up, log-in, passwords, the dashboard, the model catalog and switching plans."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts import keys
from accounts.models import Account, ApiKey, ManagementKey, User
from accounts.services import account_for
from billing.models import Plan
from gateway import catalog
from tests import factories

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _mail_tasks_run_here(settings: Any) -> None:
    """Mail goes out from Celery tasks: run them in the test (CI otherwise has a broker)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def _sign_up(client: Client, email: str, password: str = "a-long pass phrase") -> Any:
    return client.post("/signup/", {"email": email, "password1": password, "password2": password})


def test_it_signs_up_and_verifies_the_address_before_a_key_works(client: Client) -> None:
    """Issue #16: sign-ups were unverified and got the Test plan's tokens (and working keys) at
    once."""
    factories.plan()
    response = _sign_up(client, "Dana@Example.com")
    assert response.status_code == 200
    assert "Check your inbox" in response.content.decode()
    user = User.objects.get(email="dana@example.com")
    assert not user.is_email_verified
    assert account_for(user).plan.slug == "test"
    assert client.get("/dashboard/").status_code == 302  # not logged in yet
    client.force_login(user)
    refused = client.post("/keys/", {"name": "backend", "environment": "prod"})
    assert refused.status_code == 400
    assert "confirm your e-mail address" in refused.content.decode()
    assert not ApiKey.objects.exists()
    assert client.get("/keys/").context["verified"] is False
    client.post("/logout/")

    (message,) = mail.outbox
    assert message.to == ["dana@example.com"]
    link = re.search(r"http://testserver(/signup/verify/\S+/)", str(message.body))
    assert link is not None
    page = client.get(link.group(1))
    assert page.status_code == 302 and page["Location"] == "/dashboard/"
    user.refresh_from_db()
    assert user.is_email_verified
    dashboard = client.get("/dashboard/")
    assert dashboard.status_code == 200
    assert dashboard.context["user"] == user
    assert client.post("/keys/", {"name": "backend", "environment": "prod"}).status_code == 302
    # The link works once.
    client.post("/logout/")
    assert client.get(link.group(1)).status_code == 400


def test_a_wrong_verification_link_does_nothing(client: Client) -> None:
    factories.plan()
    _sign_up(client, "dana@example.com")
    user = User.objects.get(email="dana@example.com")
    assert client.get("/signup/verify/MQ/nope-nope/").status_code == 400
    assert client.get("/signup/verify/!!/x/").status_code == 400
    user.refresh_from_db()
    assert not user.is_email_verified


def test_a_taken_email_gets_the_same_answer_and_a_note_by_mail(client: Client, alice: User) -> None:
    """Issue #16: the sign-up form said whether an address exists (before checking the
    password)."""
    factories.plan()
    taken = _sign_up(client, "ALICE@example.com")
    fresh = _sign_up(Client(), "erin@example.com")
    assert taken.status_code == fresh.status_code == 200
    strip = [
        r.content.decode().replace("alice@example.com", "X").replace("erin@example.com", "X")
        for r in (taken, fresh)
    ]
    # Per-response secrets differ by design: the CSRF token and the CSP nonce.
    strip = [re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page) for page in strip]
    strip = [re.sub(r'nonce="[^"]+"', "", page) for page in strip]
    assert strip[0] == strip[1]
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1
    notes = [m for m in mail.outbox if m.to == ["alice@example.com"]]
    assert len(notes) == 1 and "already has" in notes[0].body
    # A weak password is refused for both alike, whatever the address.
    weak = [_sign_up(Client(), e, "123").status_code for e in ("alice@example.com", "z@z.io")]
    assert weak == [200, 200]


def test_the_operator_chooses_the_plan_sign_ups_start_on(client: Client, settings: Any) -> None:
    factories.plan()
    settings.SIGNUP_PLAN = "pro"
    _sign_up(client, "dana@example.com")
    assert account_for(User.objects.get(email="dana@example.com")).plan.slug == "pro"


def test_sign_ups_from_one_address_are_throttled(client: Client, settings: Any) -> None:
    """Issue #16: 20 accounts in 14 s from one client."""
    factories.plan()
    statuses = [_sign_up(client, f"p{n}@example.com").status_code for n in range(6)]
    assert statuses == [200] * 5 + [429]
    assert User.objects.count() == 5
    assert _sign_up(Client(REMOTE_ADDR="10.1.1.1"), "q@example.com").status_code == 200


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


def test_the_keys_page_issues_lists_apart_and_revokes_management_keys(
    signed_in: Client, alice: User
) -> None:
    factories.api_key(account_for(alice), name="backend")
    response = signed_in.post(
        "/keys/management/", {"mgmt-name": "deploy script", "mgmt-access": "keys:write"}
    )
    assert response.status_code == 302
    page = signed_in.get("/keys/")
    html = page.content.decode()
    # The section is in the page once, in its body (not inside the <title>).
    assert "<title>API keys · Token Factory</title>" in html
    assert html.count('<section class="card" id="management-keys"') == 1
    secret = page.context["reveal"]["secret"]
    assert secret.startswith("tf-mgmt-")
    mkey = keys.verify_management(secret)
    assert mkey is not None and mkey.scopes == ["keys:read", "keys:write"]
    assert [k.name for k in page.context["keys"]] == ["backend"]
    assert [k.name for k in page.context["management_keys"]] == ["deploy script"]
    again = signed_in.get("/keys/").content.decode()
    assert secret not in again and mkey.hint in again
    assert signed_in.post(f"/keys/management/{mkey.pk}/revoke/").status_code == 302
    assert keys.verify_management(secret) is None
    read_only = signed_in.post("/keys/management/", {"mgmt-name": "ci", "mgmt-access": "keys:read"})
    assert read_only.status_code == 302
    assert ManagementKey.objects.get(name="ci").scopes == ["keys:read"]
    bad = signed_in.post("/keys/management/", {"mgmt-name": "x", "mgmt-access": "admin"})
    assert bad.status_code == 400


def test_nobody_revokes_anothers_management_key(signed_in: Client, charlie: User) -> None:
    mkey, secret = factories.management_key(account_for(charlie))
    assert signed_in.post(f"/keys/management/{mkey.pk}/revoke/").status_code == 404
    assert keys.verify_management(secret) is not None


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


def test_email_lookups_use_an_index(db: None) -> None:
    """Issue #16: email__iexact (sign-up, issuekey) scanned the whole user table."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the expression index is PostgreSQL's UPPER(email) (CI runs it)")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = User.objects.filter(email__iexact="someone@example.com").explain()
    assert "user_email_upper" in plan, plan


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
