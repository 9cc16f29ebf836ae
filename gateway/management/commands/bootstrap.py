"""`manage.py bootstrap`: migrate, then seed plans and the catalog. Safe to run again."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from billing import plans
from gateway import catalog


class Command(BaseCommand):
    help = "Migrate the database and seed plans and the model catalog (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-migrate", action="store_true", help="skip migrations")
        parser.add_argument("--no-catalog", action="store_true", help="seed plans only")
        parser.add_argument(
            "--simulator-url",
            default=None,
            help="where the seeded catalog routes (default SIMULATOR_URL)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        created_plans = plans.seed()
        counts = {"providers": 0, "models": 0, "routes": 0, "aliases": 0}
        if not options["no_catalog"]:
            counts = catalog.seed(simulator_url=options["simulator_url"])
        self.stderr.write(
            f"bootstrap: {created_plans} plans, {counts['models']} models, {counts['providers']} "
            f"providers, {counts['routes']} routes and {counts['aliases']} model aliases created "
            "(existing rows left as they were)"
        )
        self.stdout.write("ok")
