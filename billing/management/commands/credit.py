"""`manage.py credit --email E --amount USD --reason TEXT`: an operator's credit outside the admin,
through the ledger like every other; prints the account's new balance."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import audit
from accounts.models import User
from accounts.services import NotAMember, organisation_of
from billing import ledger, money


class Command(BaseCommand):
    help = "Credit a user's account (an adjustment in the ledger). Prints the new balance."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True, help="the account owner's email")
        parser.add_argument("--amount", required=True, help="US dollars, e.g. 25 or 12.50")
        parser.add_argument("--reason", required=True, help="kept in the ledger entry")
        parser.add_argument(
            "--org",
            type=int,
            default=None,
            help="the organisation (account id) to credit, if the person is in several "
            "(default: their first)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            amount = money.from_dollars(options["amount"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if amount <= 0:
            raise CommandError("--amount must be a positive number of dollars")
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must say why")
        user = User.objects.filter(email__iexact=options["email"].strip()).first()
        if user is None:
            raise CommandError(f"no user with the email {options['email']!r}")
        try:
            account = organisation_of(user, options["org"])
        except NotAMember as exc:
            raise CommandError(str(exc)) from exc
        with audit.acting(audit.operator("manage.py credit")):
            entry = ledger.credit(
                account=account,
                amount_micros=amount,
                idempotency_key=f"cli-credit:{uuid.uuid4().hex}",
                kind=ledger.Kind.ADJUSTMENT,
                description=reason,
            )
        assert entry is not None  # a fresh idempotency key is never a replay
        self.stdout.write(
            f"credited {money.format_usd(amount)} to account {account.pk} ({user.email}); "
            f"new balance {money.format_usd(entry.balance_after_micros)}"
        )
        if settings.REDIS_URL:
            self.stderr.write("running gateways see it now (the live balance is in Redis)")
        else:
            reload_s = settings.GATEWAY_BALANCE_RELOAD_MS / 1000
            self.stderr.write(
                "embedded mode: each gateway process keeps the live balance in its own memory "
                f"and reloads it from the database within {reload_s:g} s of its last load "
                "(once the account has no paid request in flight and no unflushed usage)"
            )
