"""`manage.py addprovider --preset P [--base-url U] [--api-key-env VAR] [--slug S] [--name N]`:
add an upstream provider filled from a preset (gateway/presets.py). Prints the new slug."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import presets, provisioning


class Command(BaseCommand):
    help = "Add an upstream provider from a preset; prints its slug (exit 1 on a bad argument)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--preset", required=True, choices=sorted(presets.PRESETS))
        parser.add_argument(
            "--base-url", default="", help="default: the preset's own URL (its template filled)"
        )
        parser.add_argument(
            "--api-key-env", default="", help="environment variable with the upstream key"
        )
        parser.add_argument("--slug", default="", help="default: from the preset's name")
        parser.add_argument("--name", default="", help="default: the preset's name")
        parser.add_argument("--resource", default="", help="Azure OpenAI resource name")
        parser.add_argument("--region", default="", help="AWS region (Bedrock)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            provider = provisioning.add_provider(
                preset=options["preset"],
                base_url=options["base_url"],
                api_key_env=options["api_key_env"],
                slug=options["slug"],
                name=options["name"],
                resource=options["resource"],
                region=options["region"],
            )
        except ValidationError as exc:
            problems = (f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError("; ".join(problems)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"added {provider.name} ({provider.protocol}, {provider.base_url}); key from "
            f"${provider.api_key_env or '(none named)'}"
        )
        self.stdout.write(provider.slug)
