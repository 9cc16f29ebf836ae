"""`manage.py importmodels --provider SLUG [--prices FILE] [--only PATTERN] [--dry-run]`: read
the upstream's model list and add catalog models routed to it. Prints one line per model:
``<action>\t<model id>\t<priced|unpriced>``; unpriced models are refused until priced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import provisioning
from gateway.models import Provider


class Command(BaseCommand):
    help = (
        "Add the upstream's models to the catalog with routes to it, priced from a table (JSON "
        "or CSV, USD per 1M tokens) or left unpriced (refused until priced)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", required=True, help="the provider's slug")
        parser.add_argument(
            "--prices",
            default="",
            help='JSON {"model": {"input": "2.50", "output": "10"}} or CSV model,input,output',
        )
        parser.add_argument("--only", default="", help="a glob on model ids, e.g. 'gpt-4o*'")
        parser.add_argument(
            "--dry-run", action="store_true", help="list what the upstream offers; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        provider = Provider.objects.filter(slug=options["provider"]).first()
        if provider is None:
            raise CommandError(f"no provider with the slug {options['provider']!r}")
        prices: dict[str, provisioning.Price] = {}
        if options["prices"]:
            path = Path(options["prices"])
            try:
                prices = provisioning.read_prices(path.read_text(), filename=path.name)
            except (OSError, ValueError) as exc:
                raise CommandError(f"{path}: {exc}") from exc
        try:
            listed = provisioning.upstream_models(provider)
        except provisioning.ListingError as exc:
            raise CommandError(str(exc)) from exc
        if options["dry_run"]:
            for model_id in listed:
                self.stdout.write(model_id)
            return
        results = provisioning.import_models(
            provider=provider, model_ids=listed, prices=prices, only=options["only"]
        )
        for row in results:
            self.stdout.write(
                f"{row.action}\t{row.model_id}\t{'priced' if row.priced else 'unpriced'}"
            )
        unpriced = sum(not r.priced for r in results)
        self.stderr.write(
            f"importmodels: {len(results)} of {len(listed)} listed models matched; "
            f"{sum(r.action == 'created' for r in results)} created, {unpriced} unpriced "
            "(refused until priced in the admin)"
        )
