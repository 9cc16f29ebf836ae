"""`manage.py checkproviders [--provider SLUG] [--json]`: one real minimal chat call (one output
token) to each active provider, through the gateway's own adapters. One line per provider:
``ok|FAIL\t<slug>\t<status>\t<latency ms>\t<model>\t<detail>``, or a JSON array with --json.
Exit status 1 if any check failed (or nothing was checked)."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import provisioning


class Command(BaseCommand):
    help = "Call each active provider once (latency and status); exit 1 if any fails."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", default="", help="check only this slug")
        parser.add_argument("--json", action="store_true", help="print a JSON array")

    def handle(self, *args: Any, **options: Any) -> None:
        targets = provisioning.check_targets(options["provider"])
        if not targets:
            raise CommandError(
                f"no provider {options['provider']!r}"
                if options["provider"]
                else "no active providers"
            )
        results = provisioning.check_providers(targets)
        if options["json"]:
            self.stdout.write(orjson.dumps([r.as_dict() for r in results]).decode())
        else:
            for r in results:
                self.stdout.write(
                    f"{'ok' if r.ok else 'FAIL'}\t{r.slug}\t{r.status or '-'}\t{r.latency_ms}\t"
                    f"{r.model or '-'}\t{r.detail}"
                )
        if not all(r.ok for r in results):
            sys.exit(1)
