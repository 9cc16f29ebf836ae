"""`manage.py verifydomain DOMAIN`: mark an organisation's claim on an e-mail domain verified,
after an operator checked ownership another way; with --dns, look the TXT record up instead."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import sso
from accounts.models import OrgDomain


class Command(BaseCommand):
    help = (
        "Verify an organisation's claim on an e-mail domain (single sign-on): by the operator's "
        "word, or with --dns by its _tokenfactory-verification TXT record."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument(
            "--org", type=int, help="the organisation's id, when several have claimed the domain"
        )
        parser.add_argument("--dns", action="store_true", help="check the TXT record instead")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            domain = sso.normalise(options["domain"])
        except sso.DomainError as exc:
            raise CommandError(str(exc)) from exc
        claims = OrgDomain.objects.select_related("account").filter(domain=domain)
        if options["org"] is not None:
            claims = claims.filter(account_id=options["org"])
        found = list(claims)
        if not found:
            raise CommandError(
                f"no organisation has claimed {domain}; claim it first on the /org/sso/ page"
            )
        if len(found) > 1:
            orgs = ", ".join(f"{claim.account_id} ({claim.account.name})" for claim in found)
            raise CommandError(f"several organisations claim {domain}: {orgs}. Pass --org ID.")
        claim = found[0]
        if claim.is_verified:
            self.stdout.write(f"{domain} is already verified for {claim.account.name}.")
            return
        try:
            if options["dns"]:
                sso.check_dns(claim=claim)
            else:
                sso.mark_verified(claim=claim, how="operator", actor_label="manage.py verifydomain")
        except sso.DomainError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{domain} verified for {claim.account.name}.")
