"""Every change to a balance: append-only entries, each with an idempotency key, and the account's
balance moved in the same transaction. Replaying an entry changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F

from accounts import audit
from accounts.models import Account, User
from billing import signals
from billing.models import LedgerEntry

Kind = LedgerEntry.Kind

# The audit action for each kind of entry a person, operator or webhook posts (usage charges,
# posted by metering, are not audit events: the usage records are their history).
_AUDITED = {
    Kind.TOPUP: "billing.topup",
    Kind.REFUND: "billing.refund",
    Kind.ADJUSTMENT: "billing.adjustment",
}


class LedgerError(ValueError):
    pass


def _post(
    *,
    account: Account | int,
    amount_micros: int,
    kind: str,
    idempotency_key: str,
    description: str = "",
    reference: str = "",
    created_by: User | None = None,
) -> LedgerEntry | None:
    account_id = account if isinstance(account, int) else account.pk
    if LedgerEntry.objects.filter(idempotency_key=idempotency_key).exists():
        return None
    try:
        with transaction.atomic():
            Account.objects.filter(pk=account_id).update(
                balance_micros=F("balance_micros") + amount_micros
            )
            balance = (
                Account.objects.select_for_update()
                .values_list("balance_micros", flat=True)
                .get(pk=account_id)
            )
            entry = LedgerEntry.objects.create(
                account_id=account_id,
                kind=kind,
                amount_micros=amount_micros,
                balance_after_micros=balance,
                idempotency_key=idempotency_key,
                description=description[:300],
                reference=reference[:200],
                created_by=created_by,
            )
            action = _AUDITED.get(Kind(kind))
            if action is not None:
                # In the same transaction as the entry: a replay records nothing twice.
                audit.record(
                    action=action,
                    account=account_id,
                    target=entry,
                    target_label=description[:200] or str(entry),
                    before={"balance_micros": balance - amount_micros},
                    after={
                        "balance_micros": balance,
                        "amount_micros": amount_micros,
                        "reference": reference[:200],
                    },
                )
    except IntegrityError:
        # Someone else posted the same key first: this one is a replay.
        return None
    _announce(account_id, amount_micros)
    return entry


def credit(
    *,
    account: Account | int,
    amount_micros: int,
    idempotency_key: str,
    kind: str = Kind.TOPUP,
    description: str = "",
    reference: str = "",
    created_by: User | None = None,
) -> LedgerEntry | None:
    """Add money. Returns the new entry, or None when this idempotency key was already posted."""
    if amount_micros <= 0:
        raise LedgerError("a credit must be a positive amount")
    return _post(
        account=account,
        amount_micros=amount_micros,
        kind=kind,
        idempotency_key=idempotency_key,
        description=description,
        reference=reference,
        created_by=created_by,
    )


def adjust(
    *,
    account: Account | int,
    amount_micros: int,
    idempotency_key: str,
    description: str,
    created_by: User | None = None,
) -> LedgerEntry | None:
    """An operator's correction, either sign, with the reason kept in the ledger."""
    if amount_micros == 0:
        raise LedgerError("an adjustment cannot be zero")
    if not description.strip():
        raise LedgerError("say why: an adjustment needs a reason")
    return _post(
        account=account,
        amount_micros=amount_micros,
        kind=Kind.ADJUSTMENT,
        idempotency_key=idempotency_key,
        description=description,
        created_by=created_by,
    )


@dataclass(frozen=True)
class Charge:
    account_id: int
    amount_micros: int
    idempotency_key: str
    description: str
    reference: str


def charge_many(charges: Iterable[Charge]) -> int:
    """Usage charges from metering, in one transaction; already-posted keys are skipped.

    Charges are not announced to the live balance: admission already took them from it."""
    unique = {c.idempotency_key: c for c in charges if c.amount_micros > 0}
    todo = list(unique.values())
    if not todo:
        return 0
    posted = set(
        LedgerEntry.objects.filter(
            idempotency_key__in=[c.idempotency_key for c in todo]
        ).values_list("idempotency_key", flat=True)
    )
    todo = [c for c in todo if c.idempotency_key not in posted]
    if not todo:
        return 0
    with transaction.atomic():
        by_account: dict[int, list[Charge]] = {}
        for c in todo:
            by_account.setdefault(c.account_id, []).append(c)
        entries = []
        for account_id in sorted(by_account):
            balance = (
                Account.objects.select_for_update()
                .values_list("balance_micros", flat=True)
                .get(pk=account_id)
            )
            for c in by_account[account_id]:
                balance -= c.amount_micros
                entries.append(
                    LedgerEntry(
                        account_id=account_id,
                        kind=Kind.USAGE,
                        amount_micros=-c.amount_micros,
                        balance_after_micros=balance,
                        idempotency_key=c.idempotency_key,
                        description=c.description[:300],
                        reference=c.reference[:200],
                    )
                )
            Account.objects.filter(pk=account_id).update(balance_micros=balance)
        LedgerEntry.objects.bulk_create(entries)
    return len(entries)


def _announce(account_id: int, amount_micros: int) -> None:
    transaction.on_commit(
        lambda: signals.balance_moved.send(
            sender=LedgerEntry, account_id=account_id, amount_micros=amount_micros
        )
    )
