"""`manage.py issuekey`: a new tf- key for a person's account, printed alone on stdout."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import audit, keys
from accounts.models import User
from accounts.services import NotAMember, organisation_of


class Command(BaseCommand):
    help = "Issue a tf- key for the account of the person with this e-mail; prints only the key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--env", default="prod", choices=keys.ENVIRONMENTS)
        parser.add_argument("--name", default="issued from the command line")
        parser.add_argument(
            "--org",
            type=int,
            default=None,
            help="the organisation (account id) for the key, if the person is in several "
            "(default: their first)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["email"].strip().lower()
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"no user with the e-mail {email!r}; create one with createaccount")
        try:
            account = organisation_of(user, options["org"])
        except NotAMember as exc:
            raise CommandError(str(exc)) from exc
        try:
            with audit.acting(audit.operator("manage.py issuekey")):
                issued = keys.issue(
                    account=account,
                    name=options["name"],
                    environment=options["env"],
                    created_by=user,
                )
        except keys.KeyError_ as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.secret)
