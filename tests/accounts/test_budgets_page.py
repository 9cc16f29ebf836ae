"""The Budgets page (/org/budgets/): members and keys with their month-to-date spend against their
caps, caps set in dollars and stored in micro-dollars, audited, and only for owners and admins."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from accounts.models import ApiKey, AuditEvent, Membership, User
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.django_db
URL = "/org/budgets/"


def _spend(key: ApiKey, cost: int, at: datetime, n: int) -> None:
    UsageRecord.objects.create(
        request_id=f"req_budget_page_{key.pk}_{n}",
        account_id=key.account_id,
        api_key=key,
        surface="openai",
        model="sim-gpt",
        status=200,
        cost_micros=cost,
        created_at=at,
    )


def test_it_shows_members_and_keys_with_their_spend_against_their_caps(
    client: Client, alice: User, bob: User
) -> None:
    acct = alice.accounts.get()
    bobs_key, _ = factories.api_key(acct, name="bob's key", created_by=bob)
    alices_key, _ = factories.api_key(acct, name="alice's key", created_by=alice)
    now = datetime.now(UTC)
    _spend(bobs_key, 1_250_000, now, 1)
    _spend(bobs_key, 9_000_000, now.replace(year=now.year - 1), 2)  # another month
    _spend(alices_key, 500_000, now, 3)
    Membership.objects.filter(user=bob).update(monthly_budget_micros=5_000_000)
    ApiKey.objects.filter(pk=alices_key.pk).update(monthly_budget_micros=1_000_000)
    client.force_login(alice)
    page = client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "bob@example.com" in html and "bob&#x27;s key" in html
    member = page.context["overview"].members
    assert [(m.label, m.spent_micros, m.cap_micros, m.percent) for m in member] == [
        ("alice@example.com", 500_000, None, 0),
        ("bob@example.com", 1_250_000, 5_000_000, 25),
    ]
    by_key = {line.id: line for line in page.context["overview"].keys}
    assert (by_key[alices_key.pk].spent, by_key[alices_key.pk].cap) == ("$0.50", "$1.00")
    assert by_key[alices_key.pk].percent == 50
    assert 'value="50"' in html  # the bar


def test_it_sets_caps_in_dollars_and_audits_them(client: Client, alice: User, bob: User) -> None:
    acct = alice.accounts.get()
    key, _ = factories.api_key(acct, name="ci", created_by=bob)
    membership = Membership.objects.get(user=bob)
    client.force_login(alice)
    done = client.post(URL, {"kind": "member", "id": membership.pk, "budget_usd": "$12.50"})
    assert done.status_code == 302
    membership.refresh_from_db()
    assert membership.monthly_budget_micros == 12_500_000
    event = AuditEvent.objects.get(action="member.budget_changed")
    assert (event.before, event.after) == (
        {"monthly_budget_micros": None},
        {"monthly_budget_micros": 12_500_000},
    )
    assert event.actor_user == alice and event.target_label == "bob@example.com"

    client.post(URL, {"kind": "key", "id": key.pk, "budget_usd": "3"})
    key.refresh_from_db()
    assert key.monthly_budget_micros == 3_000_000
    event = AuditEvent.objects.get(action="key.limits_changed")
    assert event.after == {"monthly_budget_micros": 3_000_000}
    client.post(URL, {"kind": "key", "id": key.pk, "budget_usd": ""})  # no cap again
    key.refresh_from_db()
    assert key.monthly_budget_micros is None

    bad = client.post(URL, {"kind": "member", "id": membership.pk, "budget_usd": "lots"})
    assert bad.status_code == 400
    assert "write it like 25 or 12.50" in bad.content.decode()
    negative = client.post(URL, {"kind": "member", "id": membership.pk, "budget_usd": "-5"})
    assert negative.status_code == 400 and "cannot be negative" in negative.content.decode()
    membership.refresh_from_db()
    assert membership.monthly_budget_micros == 12_500_000


def test_it_is_for_owners_and_admins_of_this_organisation_only(
    client: Client, alice: User, bob: User, charlie: User
) -> None:
    client.force_login(bob)  # a developer
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"kind": "key", "id": 1, "budget_usd": "1"}).status_code == 403
    Membership.objects.filter(user=bob).update(role=Membership.Role.ADMIN)
    assert client.get(URL).status_code == 200
    # A key or member of another organisation is not found from here.
    other_key, _ = factories.api_key(charlie.accounts.get(), name="theirs")
    theirs = Membership.objects.get(user=charlie)
    assert (
        client.post(URL, {"kind": "key", "id": other_key.pk, "budget_usd": "1"}).status_code == 404
    )
    assert (
        client.post(URL, {"kind": "member", "id": theirs.pk, "budget_usd": "1"}).status_code == 404
    )
    client.logout()
    assert client.get(URL).status_code == 302  # to the log-in page


def _json(client: Client, method: str, url: str, body: dict[str, object]) -> Any:
    call = getattr(client, method)
    return call(url, json.dumps(body), content_type="application/json")


def test_the_key_api_reads_and_sets_a_keys_monthly_budget_in_dollars(
    client: Client, alice: User, bob: User
) -> None:
    client.force_login(alice)
    made = _json(client, "post", "/api/keys/", {"name": "ci", "monthly_budget_usd": "7.25"})
    assert made.status_code == 201, made.content
    assert made.json()["monthly_budget_usd"] == "7.25"
    key = ApiKey.objects.get(pk=made.json()["id"])
    assert key.monthly_budget_micros == 7_250_000
    changed = _json(client, "patch", f"/api/keys/{key.pk}/", {"monthly_budget_usd": 0.5})
    assert changed.status_code == 200 and changed.json()["monthly_budget_usd"] == "0.50"
    events = AuditEvent.objects.filter(action="key.limits_changed").order_by("id")
    assert [e.after for e in events] == [
        {"monthly_budget_micros": 7_250_000},
        {"monthly_budget_micros": 500_000},
    ]
    cleared = _json(client, "patch", f"/api/keys/{key.pk}/", {"monthly_budget_usd": None})
    assert cleared.json()["monthly_budget_usd"] is None
    bad = _json(client, "patch", f"/api/keys/{key.pk}/", {"monthly_budget_usd": "lots"})
    assert bad.status_code == 400 and "write it like 25" in bad.content.decode()
    assert client.get("/api/keys/").json()["data"][0]["monthly_budget_usd"] is None

    # A developer may manage keys but not budgets.
    client.force_login(bob)
    own = _json(client, "post", "/api/keys/", {"name": "bob's"})
    assert own.status_code == 201
    refused = _json(client, "patch", f"/api/keys/{own.json()['id']}/", {"monthly_budget_usd": "1"})
    assert refused.status_code == 403
    assert "owner or admin" in refused.content.decode()
    assert ApiKey.objects.get(pk=own.json()["id"]).monthly_budget_micros is None
