"""`manage.py credit`: refuses what it cannot post, and posts through the ledger."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from billing.models import LedgerEntry
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_credits_through_the_ledger_and_prints_the_new_balance():
    owner = factories.UserFactory.create(email="ops@example.com")
    acct = factories.account(owner=owner)
    out = io.StringIO()
    call_command(
        "credit",
        "--email",
        "OPS@example.com",
        "--amount",
        "$12.50",
        "--reason",
        "refund",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "new balance $12.50" in out.getvalue()
    entry = LedgerEntry.objects.get(account=acct)
    assert (entry.kind, entry.amount_micros, entry.description) == (
        "adjustment",
        12_500_000,
        "refund",
    )


@pytest.mark.parametrize(
    ("email", "amount", "reason", "complaint"),
    [
        ("nobody@example.com", "5", "x", "no user"),
        ("ops@example.com", "five", "x", "not a dollar amount"),
        ("ops@example.com", "-5", "x", "positive"),
        ("ops@example.com", "0.0000001", "x", "micro-dollar"),
        ("ops@example.com", "5", "  ", "--reason"),
    ],
)
def test_it_refuses_what_it_cannot_post(email, amount, reason, complaint):
    factories.account(owner=factories.UserFactory.create(email="ops@example.com"))
    with pytest.raises(CommandError, match=complaint):
        call_command("credit", "--email", email, "--amount", amount, "--reason", reason)
    assert not LedgerEntry.objects.exists()


def test_it_credits_the_organisation_named_by_org_and_only_one_the_person_is_in():
    from accounts.models import Membership

    ops = factories.UserFactory.create(email="ops@example.com")
    first = factories.account(owner=ops)
    team = factories.account(owner=factories.UserFactory.create(email="lead@example.com"))
    Membership.objects.create(user=ops, account=team, role=Membership.Role.BILLING)
    stranger = factories.account(owner=factories.UserFactory.create(email="x@example.com"))
    args = ["credit", "--email", "ops@example.com", "--amount", "3", "--reason", "goodwill"]
    call_command(*args, "--org", str(team.pk), stdout=io.StringIO(), stderr=io.StringIO())
    assert list(LedgerEntry.objects.values_list("account_id", "amount_micros")) == [
        (team.pk, 3_000_000)
    ]
    with pytest.raises(CommandError, match="not a member"):
        call_command(*args, "--org", str(stranger.pk))
    assert LedgerEntry.objects.count() == 1 and not LedgerEntry.objects.filter(account=first)
