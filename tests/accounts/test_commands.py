"""The operator commands createaccount and issuekey."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts import keys
from accounts.models import User
from accounts.services import account_for
from tests import factories

pytestmark = pytest.mark.django_db


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_createaccount_creates_a_user_and_account_on_a_plan() -> None:
    factories.plan()
    out, err = run(
        "createaccount",
        "--email",
        "Dana@Example.com",
        "--password",
        "a long phrase",
        "--plan",
        "Token Pro",
    )
    user = User.objects.get(email="dana@example.com")
    assert user.check_password("a long phrase")
    account = account_for(user)
    assert account.plan.slug == "pro"
    assert out.strip() == str(account.pk)
    assert "dana@example.com" in err and "Token Pro" in err


def test_createaccount_uses_the_default_plan() -> None:
    run("createaccount", "--email", "dana@example.com", "--password", "a long phrase")
    assert account_for(User.objects.get()).plan.slug == "test"


def test_createaccount_refuses_a_taken_email(alice: User) -> None:
    with pytest.raises(CommandError, match="already exists"):
        run("createaccount", "--email", "alice@example.com", "--password", "a long phrase")


def test_createaccount_refuses_a_weak_password(db: None) -> None:
    with pytest.raises(CommandError, match=r"password: .*too common"):
        run("createaccount", "--email", "dana@example.com", "--password", "password")
    assert not User.objects.exists()


def test_createaccount_refuses_an_unknown_plan(db: None) -> None:
    factories.plan()
    with pytest.raises(CommandError, match=r"no plan called .gold.*known plans: .*pro"):
        run(
            "createaccount",
            "--email",
            "dana@example.com",
            "--password",
            "a long phrase",
            "--plan",
            "gold",
        )
    assert not User.objects.exists()


def test_issuekey_prints_only_the_key(alice: User) -> None:
    out, _ = run("issuekey", "--email", "ALICE@example.com", "--env", "dev", "--name", "ci")
    lines = out.splitlines()
    assert len(lines) == 1
    assert out == lines[0] + "\n"
    secret = lines[0]
    assert secret.startswith("tf-dev-") and keys.looks_like_key(secret)
    key = keys.verify(secret)
    assert key is not None
    assert key.name == "ci" and key.account == account_for(alice) and key.created_by == alice


def test_issuekey_defaults_to_a_prod_key(alice: User) -> None:
    out, _ = run("issuekey", "--email", "alice@example.com")
    assert out.strip().startswith("tf-prod-")


def test_issuekey_refuses_an_unknown_person(db: None) -> None:
    with pytest.raises(CommandError, match="no user with the e-mail"):
        run("issuekey", "--email", "nobody@example.com")


def test_issuekey_refuses_an_unknown_environment(alice: User) -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        run("issuekey", "--email", "alice@example.com", "--env", "qa")


def test_issuekey_issues_for_the_organisation_named_by_org(alice: User, charlie: User) -> None:
    from accounts.models import Membership

    theirs = account_for(charlie)
    Membership.objects.create(user=alice, account=theirs, role=Membership.Role.DEVELOPER)
    out, _ = run("issuekey", "--email", "alice@example.com", "--org", str(theirs.pk))
    key = keys.verify(out.strip())
    assert key is not None and key.account == theirs and key.created_by == alice
    out, _ = run("issuekey", "--email", "alice@example.com")
    key = keys.verify(out.strip())
    assert key is not None and key.account == account_for(alice)  # her first, by default


def test_issuekey_refuses_an_organisation_the_person_is_not_in(alice: User, charlie: User) -> None:
    with pytest.raises(CommandError, match="not a member of an active organisation"):
        run("issuekey", "--email", "alice@example.com", "--org", str(account_for(charlie).pk))
