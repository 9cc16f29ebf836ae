"""billing.plans.assign_plan: the one way an account's plan changes. The plans page, Stripe's
subscription events and the admin each have a test of their own that they go through it
(tests/accounts/test_signup_and_pages.py, tests/billing/test_stripe_webhooks.py,
tests/test_admin.py)."""

from __future__ import annotations

from typing import Any

import pytest

from accounts import keys
from accounts.models import Account
from billing import plans
from billing.models import Plan
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_moves_the_account_and_announces_its_live_keys_once_after_commit(
    key_announcements: list[list[str]], django_capture_on_commit_callbacks: Any
) -> None:
    account = factories.account()
    first, _ = factories.api_key(account, name="one")
    second, _ = factories.api_key(account, name="two")
    gone, _ = factories.api_key(account, name="gone")
    keys.revoke(key=gone)
    other, _ = factories.api_key(factories.account(), name="someone else's")
    pro = Plan.objects.get(slug="pro")

    with django_capture_on_commit_callbacks(execute=False) as pending:
        moved = plans.assign_plan(account=account, plan=pro)
        assert key_announcements == []
    for callback in pending:
        callback()

    assert moved is True
    assert Account.objects.get(pk=account.pk).plan == pro and account.plan == pro
    assert key_announcements == [sorted([first.key_hash, second.key_hash])]
    assert other.key_hash not in key_announcements[0]


def test_it_changes_and_announces_nothing_when_the_account_is_already_on_the_plan(
    key_announcements: list[list[str]], django_capture_on_commit_callbacks: Any
) -> None:
    account = factories.account(plan_slug="pro")
    factories.api_key(account)

    with django_capture_on_commit_callbacks(execute=True):
        moved = plans.assign_plan(account=account, plan=Plan.objects.get(slug="pro"))

    assert moved is False
    assert key_announcements == []
