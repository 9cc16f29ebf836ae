"""GET /v1/usage by member: ``group_by=member`` adds up the keys each member created (before and
after the rollups), and ``member`` (an e-mail or a user id) keeps only that member's keys."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from django.test import Client
from django.utils.timezone import now

from accounts.models import Account, Membership
from gateway import tasks
from gateway.models import UsageRecord
from tests import factories
from tests.gateway.test_usage_api import SUMS, _range, get_usage, make_record, random_records

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team() -> dict[str, Any]:
    owner = factories.UserFactory.create(email="owner@example.com")
    acct = factories.account(owner=owner)
    dev = factories.UserFactory.create(email="dev@example.com")
    Membership.objects.create(user=dev, account=acct, role=Membership.Role.DEVELOPER)
    alpha, secret = factories.api_key(acct, name="alpha", created_by=owner)
    beta, _ = factories.api_key(acct, name="beta", created_by=dev)
    orphan, _ = factories.api_key(acct, name="made by a script")
    return {
        "account": acct,
        "owner": owner,
        "dev": dev,
        "keys": [alpha, beta, orphan],
        "secret": secret,
    }


def _by_member(acct: Account, group_by: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, int]]:
    _, _, start, end = _range()
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("requests", *SUMS), 0)
    )
    rows = UsageRecord.objects.filter(account=acct, created_at__gte=start, created_at__lt=end)
    for r in rows.select_related("api_key"):
        dims = {
            "member": (r.api_key.created_by_id or 0) if r.api_key else 0,
            "model": r.model,
        }
        row = out[tuple(dims[g] for g in group_by)]
        row["requests"] += 1
        for name in SUMS:
            row[name] += getattr(r, name)
    return dict(out)


def _buckets(body: dict[str, Any], group_by: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    names = {"member": "member_id", "model": "model"}
    found = {}
    for b in body["buckets"]:
        ident = tuple(b[names[g]] for g in group_by)
        assert ident not in found, f"two buckets for {ident}"
        found[ident] = {k: b[k] for k in ("requests", *SUMS)}
    return found


def test_it_groups_usage_by_the_member_who_created_each_key(team: dict[str, Any]) -> None:
    acct, secret = team["account"], team["secret"]
    random_records(acct, [*team["keys"], None], 200, seed=20)
    first, last, _, _ = _range()
    for rolled in (False, True):
        if rolled:
            assert tasks.roll_up_usage() == 200
        for group_by in (("member",), ("member", "model")):
            response = get_usage(secret, start=first, end=last, group_by=",".join(group_by))
            assert response.status_code == 200, response.content
            body = response.json()
            assert _buckets(body, group_by) == _by_member(acct, group_by), (rolled, group_by)
        emails = {b["member_id"]: b["member_email"] for b in body["buckets"]}
        assert emails[team["dev"].pk] == "dev@example.com"
        assert emails[team["owner"].pk] == "owner@example.com"
        assert emails[0] == ""  # the script's key and requests without a key


def test_it_filters_by_member_by_email_or_id(team: dict[str, Any]) -> None:
    acct, secret, dev = team["account"], team["secret"], team["dev"]
    random_records(acct, [*team["keys"], None], 120, seed=21)
    tasks.roll_up_usage()
    random_records(acct, team["keys"], 30, seed=22)
    first, last, _, _ = _range()
    theirs = UsageRecord.objects.filter(account=acct, api_key__created_by=dev)
    for member in ("dev@example.com", "DEV@example.com", str(dev.pk)):
        body = get_usage(secret, start=first, end=last, member=member, group_by="key").json()
        assert body["member_id"] == dev.pk
        assert body["totals"]["requests"] == theirs.count()
        assert body["totals"]["cost_micros"] == sum(r.cost_micros for r in theirs)
        assert {b["key_name"] for b in body["buckets"]} <= {"beta"}

    unknown = get_usage(secret, member="nobody@example.com")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "member"
    assert "e-mail address or user id" in unknown.json()["error"]["message"]
    # A member of another organisation is unknown here.
    stranger = factories.UserFactory.create(email="stranger@example.com")
    factories.account(owner=stranger)
    assert get_usage(secret, member="stranger@example.com").status_code == 400
    bad = get_usage(secret, group_by="team")
    assert bad.status_code == 400 and "member" in bad.json()["error"]["message"]


def test_the_usage_page_filters_and_groups_by_member(team: dict[str, Any]) -> None:
    acct, owner, dev = team["account"], team["owner"], team["dev"]
    alpha, beta, orphan = team["keys"]
    at = now()
    for key, cost in ((alpha, 100), (beta, 250), (beta, 50), (orphan, 7)):
        make_record(acct, key, created_at=at, cost_micros=cost)
    client = Client()
    client.force_login(owner)
    page = client.get("/usage/")
    assert page.status_code == 200
    rows = [(email, t.cost_micros) for email, t in page.context["by_member"]]
    assert rows == [("dev@example.com", 300), ("owner@example.com", 100), ("", 7)]
    assert "By member" in page.content.decode()

    mine = client.get("/usage/", {"member": dev.pk})
    assert mine.status_code == 200
    assert mine.context["totals"].cost_micros == 300
    assert mine.context["totals"].requests == 2
    assert f'<option value="{dev.pk}" selected>' in mine.content.decode()
    export = client.get("/usage/export.csv", {"member": dev.pk})
    assert export.status_code == 200
    assert sum(int(line.split(",")[10]) for line in export.content.decode().splitlines()[1:]) == 300
    assert client.get("/usage/", {"member": "nobody"}).status_code == 400
