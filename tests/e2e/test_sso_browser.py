"""Single sign-on end to end: a real OpenID Connect provider (tests/oidc_provider, django-oauth-
toolkit) runs as its own process on a loopback port, the gateway runs in this process, and a real
Chromium clicks "Continue with Test IdP" on our log-in page, signs in on the provider's form,
consents, and comes back signed in. Covers just-in-time membership by verified domain, "require
single sign-on" refusing a password session and letting the SSO session in, and addresses the
provider has not verified never being trusted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from accounts import sso
from accounts.models import Account, AuditEvent, Membership, OrgDomain, User
from tests import factories
from tests.browser import CHROMIUM, CHROMIUM_ARGS, orm, skip_without_chromium
from tests.conftest import ServerThread, free_port

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

skip_without_chromium()

PROVIDER_ID = "testidp"
CLIENT_ID = "token-factory"
CLIENT_SECRET = "test-client-secret-not-real"
# People at the provider: (username, e-mail, whether the provider marks the address verified);
# each one's password is "<username>-pass-1".
IDP_USERS = [
    {"username": name, "password": f"{name}-pass-1", "email": email, "email_verified": verified}
    for name, email, verified in [
        ("ann", "ann@acme.test", True),
        ("erin", "erin@acme.test", True),
        ("uma", "uma@acme.test", False),
        ("vic", "vic@acme.test", False),
    ]
]


@pytest.fixture(scope="module")
def idp(gateway_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The identity provider's base URL; its one client is the gateway, with our redirect URI."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("idp")
    env = {
        **os.environ,
        "IDP_PORT": str(port),
        "IDP_DIR": str(workdir),
        "IDP_USERS": json.dumps(IDP_USERS),
        "IDP_CLIENT_ID": CLIENT_ID,
        "IDP_CLIENT_SECRET": CLIENT_SECRET,
        "IDP_REDIRECT_URIS": f"{gateway_server.url}/accounts/oidc/{PROVIDER_ID}/login/callback/",
    }
    log = (workdir / "idp.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_provider.serve"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/o/.well-known/openid-configuration", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    "the test identity provider did not start:\n"
                    + (workdir / "idp.log").read_text()
                ) from None
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def page(transactional_db: None, gateway_server: ServerThread, idp: str) -> Iterator[Any]:
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


@pytest.fixture
def in_admin(transactional_db: None, idp: str) -> None:
    """The provider configured the way an operator does it in the admin (Social applications)."""
    from allauth.socialaccount.models import SocialApp

    SocialApp.objects.create(
        provider="openid_connect",
        provider_id=PROVIDER_ID,
        name="Test IdP",
        client_id=CLIENT_ID,
        secret=CLIENT_SECRET,
        settings={"server_url": f"{idp}/o"},
    )


@pytest.fixture
def in_environment(settings: Any, idp: str) -> None:
    """The provider configured by OIDC_PROVIDERS, as the settings module reads it."""
    from tokenfactory.settings import oidc_providers

    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": oidc_providers(
                json.dumps(
                    [
                        {
                            "id": PROVIDER_ID,
                            "name": "Test IdP",
                            "server_url": f"{idp}/o",
                            "client_id": CLIENT_ID,
                            "secret": CLIENT_SECRET,
                        }
                    ]
                )
            ),
        }
    }


def _acme(*, required: bool = False) -> Account:
    owner = factories.UserFactory.create(email="owner@acme.test")
    acme = factories.account(owner=owner)
    acme.name = "Acme"
    acme.save(update_fields=["name"])
    claim = sso.claim_domain(account=acme, domain="acme.test", default_role="billing")
    sso.mark_verified(claim=claim)
    if required:
        sso.set_required(account=acme, required=True)
    return acme


def _sso_log_in(
    page: Any, *, username: str = "", password: str = "", from_here: bool = False
) -> None:
    """Log in through the provider from our log-in page (or the page the browser is on): its own
    log-in form (unless the browser is still signed in there: no username given), then its
    consent page."""
    from playwright.sync_api import expect

    if not from_here:
        page.goto("/login/")
    page.get_by_role("button", name="Continue with Test IdP").click()
    if username:
        expect(page.get_by_role("heading", name="Test IdP")).to_be_visible()
        page.get_by_label("IdP username").fill(username)
        page.get_by_label("IdP password").fill(password)
        page.get_by_role("button", name="Sign in to Test IdP").click()
    expect(page.get_by_text("Authorize Token Factory?")).to_be_visible()
    page.get_by_role("button", name="Authorize").click()


def _session_org(page: Any) -> Any:
    from django.contrib.sessions.backends.db import SessionStore

    (cookie,) = [c for c in page.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME]
    return orm(lambda: SessionStore(session_key=cookie["value"]).load().get("tf_org"))


@pytest.mark.usefixtures("in_admin")
def test_it_signs_in_through_the_provider_and_joins_the_org_of_its_domain(page: Any) -> None:
    from playwright.sync_api import expect

    acme = orm(_acme)
    _sso_log_in(page, username="ann", password="ann-pass-1")

    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    ann = orm(User.objects.get, email="ann@acme.test")
    assert ann.is_email_verified and not ann.has_usable_password()
    membership = orm(Membership.objects.get, user=ann, account=acme)
    assert membership.role == "billing"  # the domain's default role
    assert _session_org(page) == acme.pk  # lands in it
    of_ann = AuditEvent.objects.filter(actor_user=ann).order_by("id")
    events = orm(lambda: list(of_ann.values_list("action", "account")))
    assert events == [("member.joined", acme.pk), ("user.sso_login", acme.pk)]

    # A second log-in (still signed in at the provider) neither duplicates the membership nor
    # re-audits the join.
    page.get_by_role("button", name="Log out").click()
    _sso_log_in(page)
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    assert orm(Membership.objects.filter(user=ann).count) == 1
    assert orm(AuditEvent.objects.filter(action="member.joined").count) == 1


@pytest.mark.usefixtures("in_environment")
def test_it_refuses_a_password_session_where_sso_is_required_and_lets_sso_in(page: Any) -> None:
    from playwright.sync_api import expect

    acme = orm(_acme, required=True)
    erin = orm(User.objects.create_user, email="erin@acme.test", password="a long pass phrase")
    orm(Membership.objects.create, user=erin, account=acme, role=Membership.Role.ADMIN)

    page.goto("/login/")
    page.get_by_label("Email").fill("erin@acme.test")
    page.get_by_label("Password").fill("a long pass phrase")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    response = page.goto("/org/sso/")
    assert response.status == 403
    expect(page.get_by_test_id("sso-required")).to_contain_text(
        "Acme requires single sign-on. Log out, then log in with your organisation's identity"
    )

    # The refusal offers the provider. It vouches for erin@acme.test: this first SSO log-in links
    # her existing account, and this session may act for Acme.
    _sso_log_in(page, username="erin", password="erin-pass-1", from_here=True)
    expect(page).to_have_url(re.compile(r"/org/sso/$"))  # back where she was refused
    expect(page.get_by_role("heading", name="Single sign-on", exact=True)).to_be_visible()
    expect(page.locator("[data-domain='acme.test'] [data-testid=domain-status]")).to_have_text(
        "Verified"
    )
    erin = orm(User.objects.get, pk=erin.pk)
    assert erin.has_usable_password()  # linking kept her password
    assert orm(erin.socialaccount_set.count) == 1
    assert orm(Membership.objects.filter(user=erin).count) == 1  # Acme, not joined twice


@pytest.mark.usefixtures("in_admin")
def test_it_never_trusts_an_address_the_provider_has_not_verified(page: Any) -> None:
    from playwright.sync_api import expect

    acme = orm(_acme)
    vic = orm(User.objects.create_user, email="vic@acme.test", password="a long pass phrase")

    # An existing account is not linked on the provider's unverified word.
    _sso_log_in(page, username="vic", password="vic-pass-1")
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("alert")).to_contain_text(
        "An account with vic@acme.test already exists and Test IdP has not verified"
    )
    vic = orm(User.objects.get, pk=vic.pk)
    assert orm(vic.socialaccount_set.count) == 0 and vic.has_usable_password()
    assert not orm(Membership.objects.filter(user=vic, account=acme).exists)

    # A new person may sign in, but unverified: no place in the organisation of the domain.
    page.context.clear_cookies()  # out of vic's session at the provider
    _sso_log_in(page, username="uma", password="uma-pass-1")
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    uma = orm(User.objects.get, email="uma@acme.test")
    assert not uma.is_email_verified
    assert not orm(Membership.objects.filter(user=uma, account=acme).exists)
    assert orm(OrgDomain.objects.get, account=acme).is_verified
    assert orm(AuditEvent.objects.get, action="user.sso_login").after == {
        "provider": PROVIDER_ID,
        "email_verified": False,
    }


@pytest.mark.usefixtures("in_environment")
def test_it_refuses_a_disabled_account(page: Any) -> None:
    from playwright.sync_api import expect

    ann = orm(User.objects.create_user, email="ann@acme.test", password="a long pass phrase")
    orm(User.objects.filter(pk=ann.pk).update, is_active=False)
    _sso_log_in(page, username="ann", password="ann-pass-1")
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("alert")).to_contain_text("This account is disabled")
    assert not orm(AuditEvent.objects.filter(action="user.sso_login").exists)


@pytest.mark.usefixtures("in_admin")
def test_it_takes_over_an_unconfirmed_sign_up_for_the_verified_owner_of_the_address(
    page: Any,
) -> None:
    """Someone signed up with ann's address and never confirmed it; when ann arrives through a
    provider that vouches for the address, the account is hers: linked, the stranger's password
    wiped, the address verified."""
    from playwright.sync_api import expect

    from accounts.services import sign_up

    squatter = orm(sign_up, email="ann@acme.test", password="a long pass phrase", verified=False)
    _sso_log_in(page, username="ann", password="ann-pass-1")
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    ann = orm(User.objects.get, pk=squatter.pk)
    assert ann.is_email_verified
    assert not ann.has_usable_password()
    assert orm(ann.socialaccount_set.count) == 1
