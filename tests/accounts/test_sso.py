"""Single sign-on without a browser: claiming e-mail domains (public ones refused, one verified
organisation per domain), proving them by a DNS TXT record served on loopback, the operator's
command and admin action, just-in-time membership (verified addresses only, once), the
/org/sso/ page's guard and "require single sign-on". The redirect flow against a real provider
is in tests/e2e/test_sso_browser.py."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client

from accounts import sso
from accounts.models import Account, AuditEvent, Membership, OrgDomain, SsoJoin, User
from tests import factories
from tests.dns_server import TxtServer
from tokenfactory.settings import oidc_providers

pytestmark = pytest.mark.django_db


def _org(email: str) -> Account:
    return factories.account(owner=factories.UserFactory.create(email=email))


@pytest.mark.parametrize("domain", ["gmail.com", "Outlook.com", "@hotmail.com", "proton.me."])
def test_it_refuses_public_mail_domains(domain: str) -> None:
    with pytest.raises(sso.DomainError, match="public mail domain"):
        sso.claim_domain(account=_org("o@acme.test"), domain=domain)
    assert not OrgDomain.objects.exists()


@pytest.mark.parametrize("domain", ["not a domain", "acme", "-acme.com", "a..b.com"])
def test_it_refuses_what_is_not_a_domain(domain: str) -> None:
    with pytest.raises(sso.DomainError, match="not a domain name"):
        sso.claim_domain(account=_org("o@acme.test"), domain=domain)


def test_it_claims_a_domain_pending_proof_and_audits_it() -> None:
    acme = _org("owner@acme.test")
    claim = sso.claim_domain(account=acme, domain=" ACME.test ", default_role="viewer")
    assert (claim.domain, claim.default_role, claim.is_verified) == ("acme.test", "viewer", False)
    assert claim.proof.startswith("tf-verify-") and len(claim.proof) > 30
    assert sso.record_name(claim) == "_tokenfactory-verification.acme.test"
    event = AuditEvent.objects.get(action="org.settings_changed")
    assert event.account_id == acme.pk
    assert event.after == {
        "domain": "acme.test",
        "change": "domain claimed",
        "default_role": "viewer",
    }
    with pytest.raises(sso.DomainError, match="already claimed by this organisation"):
        sso.claim_domain(account=acme, domain="acme.test")
    with pytest.raises(sso.DomainError, match="below owner"):
        sso.claim_domain(account=acme, domain="other.test", default_role="owner")


def test_it_lets_one_organisation_only_hold_a_domain_verified() -> None:
    acme, squatter = _org("owner@acme.test"), _org("owner@squat.test")
    real = sso.claim_domain(account=acme, domain="acme.test")
    pending = sso.claim_domain(account=squatter, domain="acme.test")  # pending claims may coexist
    sso.mark_verified(claim=real)
    with pytest.raises(sso.DomainError, match="already verified by another organisation"):
        sso.mark_verified(claim=pending)
    pending.refresh_from_db()
    assert not pending.is_verified
    with pytest.raises(sso.DomainError, match="already verified by another organisation"):
        sso.claim_domain(account=_org("third@x.test"), domain="acme.test")


def test_it_verifies_a_domain_by_its_txt_record(settings: Any) -> None:
    acme = _org("owner@acme.test")
    claim = sso.claim_domain(account=acme, domain="acme.test")
    records: dict[str, list[str]] = {}
    with TxtServer(records) as dns_server:
        settings.DOMAIN_VERIFICATION_NAMESERVERS = [dns_server.address]
        with pytest.raises(sso.DomainError, match=r"No TXT record at _tokenfactory-verification"):
            sso.check_dns(claim=claim)
        records["_tokenfactory-verification.acme.test"] = ["someone-else", "v=spf1 -all"]
        with pytest.raises(sso.DomainError, match=r"found: .*someone-else"):
            sso.check_dns(claim=claim)
        records["_tokenfactory-verification.acme.test"].append(claim.proof)
        sso.check_dns(claim=claim)
        assert "_tokenfactory-verification.acme.test" in dns_server.questions
    claim.refresh_from_db()
    assert claim.is_verified
    event = AuditEvent.objects.filter(action="org.settings_changed").first()
    assert event is not None
    assert event.after == {"domain": "acme.test", "change": "domain verified", "by": "dns"}
    assert claim.proof not in str(event.after)


def test_it_says_so_when_dns_cannot_be_reached(settings: Any) -> None:
    claim = sso.claim_domain(account=_org("owner@acme.test"), domain="acme.test")
    with TxtServer({}) as dns_server:
        port = dns_server.port
    settings.DOMAIN_VERIFICATION_NAMESERVERS = [f"127.0.0.1:{port}"]  # nobody listens now
    with pytest.raises(sso.DomainError, match="Could not look up"):
        sso.check_dns(claim=claim)


def test_it_verifies_by_the_operators_command() -> None:
    acme, other = _org("owner@acme.test"), _org("owner@other.test")
    sso.claim_domain(account=acme, domain="acme.test")
    with pytest.raises(CommandError, match="no organisation has claimed"):
        call_command("verifydomain", "nobody.test")
    sso.claim_domain(account=other, domain="acme.test")
    with pytest.raises(CommandError, match="Pass --org"):
        call_command("verifydomain", "acme.test")
    out = StringIO()
    call_command("verifydomain", "acme.test", "--org", str(acme.pk), stdout=out)
    assert "acme.test verified" in out.getvalue()
    assert OrgDomain.objects.get(account=acme).is_verified
    event = AuditEvent.objects.filter(action="org.settings_changed").first()
    assert event is not None
    assert (event.actor_kind, event.actor_label) == ("operator", "manage.py verifydomain")


def test_it_verifies_by_the_admin_action(admin_client: Client) -> None:
    claim = sso.claim_domain(account=_org("owner@acme.test"), domain="acme.test")
    response = admin_client.post(
        "/admin/accounts/orgdomain/",
        {"action": "mark_verified", "_selected_action": [claim.pk]},
        follow=True,
    )
    assert response.status_code == 200
    claim.refresh_from_db()
    assert claim.is_verified


def test_it_joins_people_just_in_time_once_and_only_by_verified_address() -> None:
    acme = _org("owner@acme.test")
    claim = sso.claim_domain(account=acme, domain="acme.test", default_role="viewer")
    dana = factories.UserFactory.create(email="dana@acme.test")
    # Pending domain: nobody joins.
    assert sso.join_by_domain(user=dana, verified_emails=["dana@acme.test"]) is None
    sso.mark_verified(claim=claim)
    # An address the provider did not verify is not trusted.
    assert sso.join_by_domain(user=dana, verified_emails=[]) is None
    joined = sso.join_by_domain(user=dana, verified_emails=["dana@acme.test"])
    assert joined is not None and (joined.account, joined.role) == (acme, "viewer")
    assert sso.join_by_domain(user=dana, verified_emails=["dana@acme.test"]) == joined
    assert Membership.objects.filter(user=dana, account=acme).count() == 1
    event = AuditEvent.objects.get(action="member.joined")
    assert event.after == {"role": "viewer", "via": "single sign-on", "domain": "acme.test"}
    # Removed later: logging in again does not bring them back.
    joined.delete()
    assert sso.join_by_domain(user=dana, verified_emails=["dana@acme.test"]) is None
    assert not Membership.objects.filter(user=dana, account=acme).exists()
    assert SsoJoin.objects.filter(user=dana, account=acme).count() == 1


def test_it_reads_providers_from_the_environment() -> None:
    apps = oidc_providers(
        '[{"id": "okta", "name": "Okta", "server_url": "https://acme.okta.com/", '
        '"client_id": "abc", "secret": "xyz"}]'
    )
    assert apps == [
        {
            "provider_id": "okta",
            "name": "Okta",
            "client_id": "abc",
            "secret": "xyz",
            "settings": {"server_url": "https://acme.okta.com"},
        }
    ]
    assert oidc_providers("") == []
    with pytest.raises(ImproperlyConfigured, match="lacks server_url, client_id"):
        oidc_providers('[{"id": "okta", "name": "Okta"}]')
    with pytest.raises(ImproperlyConfigured, match="not valid JSON"):
        oidc_providers("[{")


def test_it_shows_a_button_per_configured_provider(client: Client, settings: Any) -> None:
    from allauth.socialaccount.models import SocialApp

    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": oidc_providers(
                '[{"id": "okta", "name": "Okta", "server_url": "https://acme.okta.com", '
                '"client_id": "abc", "secret": "xyz"}]'
            )
        }
    }
    SocialApp.objects.create(
        provider="openid_connect",
        provider_id="entra",
        name="Microsoft Entra",
        client_id="def",
        settings={"server_url": "https://login.example/v2.0"},
    )
    page = client.get("/login/").content.decode()
    assert "Continue with Okta" in page
    assert 'action="/accounts/oidc/okta/login/"' in page
    assert "Continue with Microsoft Entra" in page
    assert 'action="/accounts/oidc/entra/login/"' in page
    assert "xyz" not in page


def test_it_has_no_buttons_without_providers(client: Client) -> None:
    assert "Continue with" not in client.get("/login/").content.decode()


@pytest.mark.parametrize(
    ("role", "status"),
    [("owner", 200), ("admin", 200), ("billing", 403), ("developer", 403), ("viewer", 403)],
)
def test_it_guards_the_sso_page_by_role(client: Client, role: str, status: int) -> None:
    acme = _org("owner@acme.test")
    person = acme.members.get() if role == "owner" else factories.UserFactory.create()
    if role != "owner":
        Membership.objects.create(user=person, account=acme, role=role)
        client.force_login(person)
        session = client.session
        session["tf_org"] = acme.pk
        session.save()
    else:
        client.force_login(person)
    assert client.get("/org/sso/").status_code == status


def test_it_claims_checks_and_removes_through_the_page(client: Client, settings: Any) -> None:
    acme = _org("owner@acme.test")
    client.force_login(acme.members.get())
    response = client.post("/org/sso/", {"action": "claim", "domain": "gmail.com"})
    assert response.status_code == 400
    assert "public mail domain" in response.content.decode()
    response = client.post(
        "/org/sso/", {"action": "claim", "domain": "acme.test", "default_role": "billing"}
    )
    assert response.status_code == 302
    claim = OrgDomain.objects.get(account=acme)
    page = client.get("/org/sso/").content.decode()
    assert claim.proof in page and "_tokenfactory-verification.acme.test" in page
    with TxtServer({"_tokenfactory-verification.acme.test": [claim.proof]}) as dns_server:
        settings.DOMAIN_VERIFICATION_NAMESERVERS = [dns_server.address]
        client.post("/org/sso/", {"action": "check", "claim": claim.pk})
    claim.refresh_from_db()
    assert claim.is_verified
    client.post("/org/sso/", {"action": "role", "claim": claim.pk, "default_role": "viewer"})
    claim.refresh_from_db()
    assert claim.default_role == "viewer"
    client.post("/org/sso/", {"action": "require", "required": "on"})
    acme.refresh_from_db()
    assert acme.sso_required
    client.post("/org/sso/", {"action": "remove", "claim": claim.pk})
    assert not OrgDomain.objects.exists()
    changes: list[dict[str, Any]] = [
        event.after or {}
        for event in AuditEvent.objects.filter(action="org.settings_changed").order_by("id")
    ]
    assert [after.get("change", after) for after in changes] == [
        "domain claimed",
        "domain verified",
        {"domain": "acme.test", "default_role": "viewer"},
        {"sso_required": True},
        "domain removed",
    ]


def test_it_requires_sso_of_members_but_not_of_owners(client: Client) -> None:
    acme = _org("owner@acme.test")
    owner = acme.members.get()
    erin = User.objects.create_user(email="erin@acme.test", password="a long pass phrase")
    Membership.objects.create(user=erin, account=acme, role=Membership.Role.ADMIN)
    sso.set_required(account=acme, required=True)
    client.post("/login/", {"username": "erin@acme.test", "password": "a long pass phrase"})
    response = client.get("/org/sso/")
    assert response.status_code == 403
    assert "requires single sign-on" in response.content.decode()
    client.logout()
    client.force_login(owner)  # owners are exempt: the way back in
    assert client.get("/org/sso/").status_code == 200


def test_it_requires_sso_on_the_key_api_too(client: Client) -> None:
    acme = _org("owner@acme.test")
    dev = User.objects.create_user(email="dev@acme.test", password="a long pass phrase")
    Membership.objects.create(user=dev, account=acme, role=Membership.Role.DEVELOPER)
    client.post("/login/", {"username": "dev@acme.test", "password": "a long pass phrase"})
    assert client.get("/api/keys/").status_code == 200
    sso.set_required(account=acme, required=True)
    refused = client.get("/api/keys/")
    assert refused.status_code == 403
    assert "requires single sign-on" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("192.0.2.1", ("192.0.2.1", None)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_it_reads_nameservers_with_or_without_a_port(entry: str, parsed: tuple[str, Any]) -> None:
    assert sso._nameserver(entry) == parsed


def test_it_names_the_providers_on_the_org_page(client: Client, settings: Any) -> None:
    acme = _org("owner@acme.test")
    client.force_login(acme.members.get())
    assert "No identity provider is configured" in client.get("/org/sso/").content.decode()
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": oidc_providers(
                '[{"id": "okta", "name": "Okta", "server_url": "https://acme.okta.com", '
                '"client_id": "abc", "secret": "xyz"}]'
            )
        }
    }
    page = client.get("/org/sso/").content.decode()
    assert "People can log in with <strong>Okta</strong>" in page
    assert "xyz" not in page
