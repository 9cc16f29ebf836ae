"""Organisations through their pages: invitations (sent, re-sent, withdrawn, expired, used, for
another address), joining, switching, roles and their limits (owners, the last owner), removal
with the keys revoked, leaving, renaming, transfer and deletion; developers seeing only their own
keys and usage; a management key acting as an admin of its organisation."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils.timezone import now

from accounts import keys, orgs
from accounts.models import Account, ApiKey, AuditEvent, Invitation, Membership, User
from accounts.services import account_for
from tests import factories

pytestmark = pytest.mark.django_db


def _join(account: Account, role: str, email: str | None = None) -> User:
    user: User = factories.UserFactory.create(**({"email": email} if email else {}))
    Membership.objects.create(user=user, account=account, role=role)
    return user


def _invite(client: Client, email: str, role: str = "developer") -> str:
    """Invite through the page; the path of the link in the e-mail."""
    before = len(mail.outbox)
    response = client.post("/org/members/invite/", {"email": email, "role": role})
    assert response.status_code == 302, response.content
    assert len(mail.outbox) == before + 1
    message = mail.outbox[-1]
    assert message.to == [email]
    found = re.search(r"https?://[^/\s]+(/invitations/\S+/)", str(message.body))
    assert found is not None
    return found.group(1)


@pytest.fixture
def owner_client(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_it_invites_and_the_new_person_signs_up_into_the_organisation(
    owner_client: Client, alice: User
) -> None:
    link = _invite(owner_client, "dana@example.com", "billing")
    page = owner_client.get("/org/members/")
    assert b"dana@example.com" in page.content  # pending
    invitation = Invitation.objects.get(email="dana@example.com")
    assert link.split("/")[2] not in invitation.token_hash  # only the hash is stored

    owner_client.logout()
    shown = owner_client.get(link)
    assert shown.status_code == 200
    assert b'value="dana@example.com"' in shown.content and b"readonly" in shown.content
    # The address is the invited one whatever the form says.
    response = owner_client.post(
        link,
        {
            "email": "mallory@example.com",
            "password1": "a long pass phrase",
            "password2": "a long pass phrase",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    dana = User.objects.get(email="dana@example.com")
    assert dana.is_email_verified
    assert not User.objects.filter(email="mallory@example.com").exists()
    (membership,) = Membership.objects.filter(user=dana)
    assert membership.account == account_for(alice) and membership.role == "billing"
    assert owner_client.session[orgs.ORG_SESSION_KEY] == membership.account_id
    assert owner_client.get("/billing/").status_code == 200

    again = owner_client.get(link)
    assert again.status_code == 410 and b"already used" in again.content
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"member.invited", "member.joined"} <= actions


def test_it_refuses_an_invitation_for_another_address(
    owner_client: Client, client: Client, charlie: User
) -> None:
    link = _invite(owner_client, "dana@example.com")
    other = Client()
    other.force_login(charlie)
    response = other.get(link)
    assert response.status_code == 403
    assert b"This invitation is for dana@example.com" in response.content
    assert other.post(link).status_code == 403
    assert not Membership.objects.filter(user=charlie, account__name="alice@example.com").exists()


def test_an_existing_person_logs_in_and_joins(owner_client: Client, charlie: User) -> None:
    link = _invite(owner_client, "charlie@example.com", "viewer")
    visitor = Client()
    page = visitor.get(link)
    assert b"Log in to accept" in page.content
    visitor.force_login(charlie)
    assert b"Join alice@example.com" in visitor.get(link).content
    response = visitor.post(link)
    assert response.status_code == 302
    membership = Membership.objects.get(user=charlie, account__name="alice@example.com")
    assert membership.role == "viewer"
    assert visitor.session[orgs.ORG_SESSION_KEY] == membership.account_id
    assert visitor.get("/keys/").status_code == 403  # viewers have no keys page


def test_withdrawn_expired_and_resent_links_say_so(owner_client: Client) -> None:
    link = _invite(owner_client, "dana@example.com")
    invitation = Invitation.objects.get(email="dana@example.com")
    owner_client.post(f"/org/invitations/{invitation.pk}/resend/")
    new_link = re.search(r"(/invitations/\S+/)", str(mail.outbox[-1].body))
    assert new_link is not None and new_link.group(1) != link
    visitor = Client()
    assert b"not valid" in visitor.get(link).content  # replaced by the re-sent one
    with time_machine.travel(now() + timedelta(days=8)):
        expired = visitor.get(new_link.group(1))
        assert expired.status_code == 410 and b"expired" in expired.content
    owner_client.post(f"/org/invitations/{invitation.pk}/withdraw/")
    withdrawn = visitor.get(new_link.group(1))
    assert withdrawn.status_code == 410 and b"withdrawn" in withdrawn.content


def test_it_refuses_to_invite_a_member_twice(owner_client: Client, bob: User) -> None:
    response = owner_client.post("/org/members/invite/", {"email": bob.email, "role": "viewer"})
    assert response.status_code == 400 and b"already a member" in response.content


def test_admins_cannot_make_or_unmake_owners(client: Client, alice: User) -> None:
    account = account_for(alice)
    admin = _join(account, "admin")
    dev = _join(account, "developer")
    client.force_login(admin)
    dev_m = Membership.objects.get(user=dev)
    client.post(f"/org/members/{dev_m.pk}/role/", {"role": "owner"})
    assert Membership.objects.get(user=dev).role == "developer"
    alice_m = Membership.objects.get(user=alice)
    page = client.post(f"/org/members/{alice_m.pk}/role/", {"role": "viewer"}, follow=True)
    assert b"Only an owner" in page.content
    assert Membership.objects.get(user=alice).role == "owner"
    assert client.post(f"/org/members/{alice_m.pk}/remove/", {}).status_code == 302
    assert Membership.objects.filter(user=alice).exists()
    response = client.post("/org/members/invite/", {"email": "x@example.com", "role": "owner"})
    assert response.status_code == 400 and b"Only an owner can invite" in response.content
    client.post(f"/org/members/{dev_m.pk}/role/", {"role": "viewer"})
    assert Membership.objects.get(user=dev).role == "viewer"


def test_the_last_owner_can_neither_leave_nor_be_demoted_nor_removed(
    owner_client: Client, alice: User
) -> None:
    alice_m = Membership.objects.get(user=alice)
    members_page = owner_client.get("/org/members/").content.decode()
    assert "Leave organisation" not in members_page and "You are the only owner" in members_page
    page = owner_client.post("/org/leave/", follow=True)
    assert b"last owner" in page.content
    page = owner_client.post(f"/org/members/{alice_m.pk}/role/", {"role": "admin"}, follow=True)
    assert b"last owner" in page.content
    assert Membership.objects.get(user=alice).role == "owner"
    second = _join(alice_m.account, "owner")
    other = Client()
    other.force_login(second)
    other.post(f"/org/members/{alice_m.pk}/role/", {"role": "admin"})
    assert Membership.objects.get(user=alice).role == "admin"
    second_m = Membership.objects.get(user=second)
    page = other.post("/org/leave/", follow=True)
    assert b"last owner" in page.content
    assert Membership.objects.get(pk=second_m.pk).role == "owner"


def test_removing_a_member_revokes_their_keys_when_asked(owner_client: Client, alice: User) -> None:
    account = account_for(alice)
    dev = _join(account, "developer")
    other_dev = _join(account, "developer")
    _, secret = factories.api_key(account, created_by=dev)
    _, kept_secret = factories.api_key(account, created_by=other_dev)
    mine, _ = factories.api_key(account, created_by=alice)
    dev_m = Membership.objects.get(user=dev)
    other_m = Membership.objects.get(user=other_dev)
    owner_client.post(f"/org/members/{dev_m.pk}/remove/", {"revoke_keys": "on"})
    assert not Membership.objects.filter(pk=dev_m.pk).exists()
    assert keys.verify(secret) is None
    owner_client.post(f"/org/members/{other_m.pk}/remove/", {})  # the box unticked
    assert keys.verify(kept_secret) is not None
    mine.refresh_from_db()
    assert mine.revoked_at is None
    removed = AuditEvent.objects.filter(action="member.removed").order_by("at")
    assert [(e.after or {}).get("keys_revoked") for e in removed] == [1, 0]


def test_a_developer_sees_and_manages_only_their_own_keys(client: Client, alice: User) -> None:
    account = account_for(alice)
    dev = _join(account, "developer")
    alices, _ = factories.api_key(account, name="alice-key", created_by=alice)
    client.force_login(dev)
    response = client.post("/keys/", {"name": "dev-key", "environment": "dev"})
    assert response.status_code == 302
    page = client.get("/keys/").content.decode()
    assert "dev-key" in page and "alice-key" not in page
    assert "Management keys" not in page
    assert client.post(f"/keys/{alices.pk}/revoke/", {"confirm": "yes"}).status_code == 404
    listed = client.get("/api/keys/").json()["data"]
    assert [row["name"] for row in listed] == ["dev-key"]
    assert client.get(f"/api/keys/{alices.pk}/").status_code == 404
    owner = Client()
    owner.force_login(alice)
    owner_page = owner.get("/keys/").content.decode()
    assert "dev-key" in owner_page and "alice-key" in owner_page and dev.email in owner_page
    assert len(owner.get("/api/keys/").json()["data"]) == 2


def test_a_developer_sees_only_the_usage_of_their_keys(client: Client, alice: User) -> None:
    from gateway.models import UsageRecord

    account = account_for(alice)
    dev = _join(account, "developer")
    mine, _ = factories.api_key(account, name="dev-key", created_by=dev)
    alices, _ = factories.api_key(account, name="alice-key", created_by=alice)
    for key, model, request_id in (
        (mine, "model-mine", "req_mine"),
        (alices, "model-hers", "req_hers"),
    ):
        UsageRecord.objects.create(
            account=account,
            api_key=key,
            request_id=request_id,
            model=model,
            surface="openai",
            status=200,
            input_tokens=10,
            output_tokens=5,
            created_at=now(),
        )
    client.force_login(dev)
    csv = client.get("/usage/export.csv?period=month").content.decode()
    assert "model-mine" in csv and "model-hers" not in csv
    activity = client.get("/activity/").content.decode()
    assert "req_mine" in activity and "req_hers" not in activity
    assert client.get("/activity/req_hers/").status_code == 404
    assert client.get(f"/usage/?key={alices.pk}").status_code == 400
    usage_page = client.get("/usage/").content
    assert b"keys you created" in usage_page
    assert b"model-mine" in usage_page and b"model-hers" not in usage_page  # the model filter too
    assert b"keys you created" in client.get("/dashboard/").content
    owner = Client()
    owner.force_login(alice)
    csv = owner.get("/usage/export.csv?period=month").content.decode()
    assert "model-mine" in csv and "model-hers" in csv
    csv = owner.get(f"/usage/export.csv?period=month&member={dev.pk}").content.decode()
    assert "model-mine" in csv and "model-hers" not in csv
    page = owner.get(f"/usage/?member={dev.pk}")
    assert page.status_code == 200 and dev.email.encode() in page.content
    assert b"model-hers" in owner.get("/usage/").content
    assert owner.get("/usage/?member=999999").status_code == 400
    assert client.get(f"/usage/?member={alice.pk}").status_code == 400  # not for developers


def test_it_switches_organisations_and_creates_new_ones(owner_client: Client, alice: User) -> None:
    first = account_for(alice)
    response = owner_client.post("/org/new/", {"name": "Acme Research"})
    assert response.status_code == 302
    acme = Account.objects.get(name="Acme Research")
    assert Membership.objects.get(user=alice, account=acme).role == "owner"
    assert owner_client.session[orgs.ORG_SESSION_KEY] == acme.pk
    assert b"Acme Research" in owner_client.get("/dashboard/").content
    owner_client.post("/keys/", {"name": "acme-key", "environment": "dev"})
    assert ApiKey.objects.get(name="acme-key").account == acme
    assert "acme-key" in owner_client.get("/keys/").content.decode()  # shown once
    owner_client.post("/org/switch/", {"account": first.pk})
    assert owner_client.session[orgs.ORG_SESSION_KEY] == first.pk
    assert "acme-key" not in owner_client.get("/keys/").content.decode()
    stranger = factories.account()
    owner_client.post("/org/switch/", {"account": stranger.pk})
    assert owner_client.session[orgs.ORG_SESSION_KEY] == first.pk
    assert AuditEvent.objects.filter(action="org.created", account=acme).exists()


def test_owners_rename_transfer_and_delete(owner_client: Client, alice: User) -> None:
    account = account_for(alice)
    bob = _join(account, "admin")
    _, secret = factories.api_key(account, created_by=bob)
    owner_client.post("/org/settings/", {"name": "Alice & Co"})
    account.refresh_from_db()
    assert account.name == "Alice & Co"
    assert b"/org/sso/" in owner_client.get("/org/settings/").content
    bob_m = Membership.objects.get(user=bob)
    owner_client.post("/org/transfer/", {"membership": bob_m.pk})
    assert Membership.objects.get(user=bob).role == "owner"
    assert Membership.objects.get(user=alice).role == "admin"
    assert owner_client.post("/org/delete/", {"confirm_name": "Alice & Co"}).status_code == 403
    new_owner = Client()
    new_owner.force_login(bob)
    page = new_owner.post("/org/delete/", {"confirm_name": "alice & co"}, follow=True)
    assert b"exactly" in page.content
    new_owner.post("/org/delete/", {"confirm_name": "Alice & Co"})
    account.refresh_from_db()
    assert not account.is_active
    assert keys.verify(secret) is None
    # Nobody acts for it any more: each lands in a personal organisation.
    assert new_owner.get("/dashboard/").status_code == 200
    assert new_owner.session[orgs.ORG_SESSION_KEY] != account.pk
    actions = set(AuditEvent.objects.filter(account=account).values_list("action", flat=True))
    assert {"org.renamed", "org.ownership_transferred", "org.deleted"} <= actions


def test_a_management_key_acts_as_an_admin_of_its_organisation(alice: User) -> None:
    account = account_for(alice)
    dev = _join(account, "developer")
    factories.api_key(account, name="dev-key", created_by=dev)
    _, secret = factories.management_key(account)
    script = Client()
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    listed = script.get("/api/keys/", **auth).json()["data"]
    assert [row["name"] for row in listed] == ["dev-key"]
    created = script.post(
        "/api/keys/", json.dumps({"name": "from-script"}), content_type="application/json", **auth
    )
    assert created.status_code == 201
    made = ApiKey.objects.get(name="from-script")
    # An operator's management key records the owner it acts through as the maker.
    assert made.account == account and made.created_by == alice
    _, dev_secret = factories.management_key(account, name="dev's script")
    from accounts.models import ManagementKey

    ManagementKey.objects.filter(name="dev's script").update(created_by=dev)
    by_dev = script.post(
        "/api/keys/",
        json.dumps({"name": "dev-script"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {dev_secret}",
    )
    assert by_dev.status_code == 201
    assert ApiKey.objects.get(name="dev-script").created_by == dev


def test_pages_offer_only_what_the_role_may_do(client: Client, alice: User) -> None:
    viewer = _join(account_for(alice), "viewer")
    client.force_login(viewer)
    page = client.get("/dashboard/").content.decode()
    assert 'href="/keys/"' not in page and 'href="/billing/"' not in page
    assert 'href="/org/settings/"' not in page and 'href="/org/members/"' in page
    members_page = client.get("/org/members/").content.decode()
    assert "Send invitation" not in members_page and "Leave organisation" in members_page
    owner = Client()
    owner.force_login(alice)
    page = owner.get("/dashboard/").content.decode()
    assert 'href="/keys/"' in page and 'href="/org/settings/"' in page
