from __future__ import annotations

import pytest

from accounts.models import Account
from billing import ledger
from billing.models import LedgerEntry
from tests import factories


@pytest.fixture
def account(db):
    return factories.account()


def test_it_credits_once_per_idempotency_key(account):
    first = ledger.credit(account=account, amount_micros=5_000_000, idempotency_key="evt_1")
    again = ledger.credit(account=account, amount_micros=5_000_000, idempotency_key="evt_1")
    assert first is not None and again is None
    account.refresh_from_db()
    assert account.balance_micros == 5_000_000
    assert LedgerEntry.objects.filter(account=account).count() == 1


def test_it_keeps_the_balance_equal_to_the_sum_of_entries(account):
    ledger.credit(account=account, amount_micros=10_000_000, idempotency_key="a")
    ledger.charge_many(
        [
            ledger.Charge(account.pk, 1_234, "usage:r1", "m", "r1"),
            ledger.Charge(account.pk, 5_000, "usage:r2", "m", "r2"),
            ledger.Charge(account.pk, 5_000, "usage:r2", "m", "r2"),
        ]
    )
    ledger.charge_many([ledger.Charge(account.pk, 1_234, "usage:r1", "m", "r1")])
    account.refresh_from_db()
    total = sum(e.amount_micros for e in LedgerEntry.objects.filter(account=account))
    assert account.balance_micros == total == 10_000_000 - 6_234
    newest = LedgerEntry.objects.filter(account=account).latest("id")
    assert newest.balance_after_micros == account.balance_micros


def test_it_refuses_credits_that_are_not_positive_and_adjustments_without_a_reason(account):
    with pytest.raises(ledger.LedgerError):
        ledger.credit(account=account, amount_micros=0, idempotency_key="z")
    with pytest.raises(ledger.LedgerError):
        ledger.adjust(account=account, amount_micros=5, idempotency_key="y", description=" ")
    assert Account.objects.get(pk=account.pk).balance_micros == 0


@pytest.fixture
def balance_announcements():
    from billing.signals import balance_moved

    sent = []

    def listen(sender, *, account_id, amount_micros, **kwargs):
        sent.append((account_id, amount_micros))

    balance_moved.connect(listen)
    yield sent
    balance_moved.disconnect(listen)


def test_it_announces_credits_and_adjustments_after_commit_but_not_replays_or_charges(
    account, balance_announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as pending:
        ledger.credit(account=account, amount_micros=5_000_000, idempotency_key="t:1")
        assert balance_announcements == []
    for callback in pending:
        callback()
    with django_capture_on_commit_callbacks(execute=True):
        ledger.credit(account=account, amount_micros=5_000_000, idempotency_key="t:1")
        ledger.adjust(
            account=account, amount_micros=-1_000, idempotency_key="t:2", description="fix"
        )
        ledger.charge_many(
            [
                ledger.Charge(
                    account_id=account.pk,
                    amount_micros=7,
                    idempotency_key="usage:r1",
                    description="",
                    reference="r1",
                )
            ]
        )

    assert balance_announcements == [(account.pk, 5_000_000), (account.pk, -1_000)]
