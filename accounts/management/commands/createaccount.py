"""`manage.py createaccount`: a user and their personal account; prints the account id."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import audit
from accounts.services import SignupError, account_for, sign_up
from billing import plans


class Command(BaseCommand):
    help = "Create a user and their personal account. Prints the account id on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--plan", default=None, help="plan slug or name (default: the default)")
        parser.add_argument("--name", default="", help="the person's name")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = None
        if options["plan"]:
            try:
                plan = plans.by_name(options["plan"])
            except plans.UnknownPlan as exc:
                raise CommandError(str(exc)) from exc
        try:
            with audit.acting(audit.operator("manage.py createaccount")):
                user = sign_up(
                    email=options["email"],
                    password=options["password"],
                    name=options["name"],
                    plan=plan,
                )
        except SignupError as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from exc
        account = account_for(user)
        self.stderr.write(f"created {user.email} on {account.plan.name} (account {account.pk})")
        self.stdout.write(str(account.pk))
