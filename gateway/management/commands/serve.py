"""`manage.py serve`: serve the platform (gateway, APIs, dashboard) until interrupted."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from gateway import catalog
from tokenfactory import server


class Command(BaseCommand):
    help = (
        "Serve Token Factory on HOST:PORT with uvicorn (uvloop, httptools), each request started "
        "as soon as it has arrived. With --workers above 1, set REDIS_URL so the workers share "
        "limits and balances."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--uds", help="listen on this Unix socket instead of HOST:PORT")
        parser.add_argument(
            "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1"))
        )
        parser.add_argument("--log-level", default="info", help="uvicorn's own log level")
        parser.add_argument("--access-log", action="store_true", help="log every request")
        parser.add_argument(
            "--proxy-headers",
            action="store_true",
            help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a proxy)",
        )
        parser.add_argument("--forwarded-allow-ips", default=None)
        parser.add_argument("--root-path", default="", help="when mounted below a path prefix")
        parser.add_argument("--timeout-keep-alive", type=int, default=5, help="seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError(
                f"--workers {options['workers']} needs REDIS_URL: without Redis each worker would "
                "keep its own limits and live balance. Set REDIS_URL, or run one worker."
            )
        try:
            failing = catalog.undecryptable_providers()
        except DatabaseError:
            failing = []  # not migrated yet: no stored keys to check
        connections.close_all()  # the workers open their own
        if failing:
            raise CommandError(
                "The stored API keys of these providers cannot be decrypted with the configured "
                f"keys: {', '.join(failing)}. Set TOKENFACTORY_SECRET_KEYS to include the key "
                "they were encrypted with (docs/operating.md, 'Upstream API keys')."
            )
        server.run(
            options["host"],
            options["port"],
            workers=options["workers"],
            uds=options["uds"],
            log_level=options["log_level"],
            access_log=options["access_log"],
            proxy_headers=options["proxy_headers"],
            forwarded_allow_ips=options["forwarded_allow_ips"],
            root_path=options["root_path"],
            timeout_keep_alive=options["timeout_keep_alive"],
        )
