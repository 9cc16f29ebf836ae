"""Every change to a key is announced once, after commit, through accounts.signals.key_changed;
the gateway forgets the key on hearing it (its processes all listen: tests/e2e/test_multiprocess.py
shows a revocation taking effect on two at once)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from accounts import keys
from gateway import auth
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_announces_each_key_operation_once_after_commit(
    key_announcements: list[list[str]], django_capture_on_commit_callbacks: Any
) -> None:
    account = factories.account(plan_slug="pro")

    with django_capture_on_commit_callbacks(execute=True):
        issued = keys.issue(account=account, name="backend")
    with django_capture_on_commit_callbacks(execute=True):
        keys.update(key=issued.key, rpm_limit=10)
    with django_capture_on_commit_callbacks(execute=True):
        successor = keys.rotate(key=issued.key, grace=timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as pending:
        keys.revoke(key=successor.key)
        assert len(key_announcements) == 4, "nothing is announced before the commit"
    for callback in pending:
        callback()

    old, new = issued.key.key_hash, successor.key.key_hash
    assert key_announcements == [[old], [old], [new], [old], [new]]


def test_the_gateway_forgets_an_announced_key(
    django_capture_on_commit_callbacks: Any,
) -> None:
    account = factories.account(plan_slug="pro")
    key, _ = factories.api_key(account)
    auth._cache[key.key_hash] = (auth.caller_for(key), time.monotonic())

    with django_capture_on_commit_callbacks(execute=True):
        keys.revoke(key=key)

    assert key.key_hash not in auth._cache
