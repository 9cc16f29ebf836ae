"""`manage.py rotatekeys`: re-encrypt every stored upstream API key with the first key in
TOKENFACTORY_SECRET_KEYS (after a new key was put first), so the old keys can be dropped."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import catalog, crypto


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider's stored API key with the first key in "
        "TOKENFACTORY_SECRET_KEYS; prints how many were re-encrypted. --check only verifies that "
        "every stored key decrypts (exit status 1 when one does not)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="verify every stored key decrypts; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            failing = catalog.undecryptable_providers()
            if failing:
                raise CommandError(
                    "These providers' stored API keys cannot be decrypted with the configured "
                    f"keys: {', '.join(failing)}. See docs/operating.md, 'Upstream API keys'."
                )
            self.stdout.write("ok")
            return
        try:
            count = catalog.rotate_api_keys()
        except crypto.UndecryptableKey as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(count))
