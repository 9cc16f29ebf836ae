"""`manage.py simulator`: serve the bundled upstream simulator until interrupted."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from gateway.simulator import server
from gateway.simulator.knobs import Knobs


class Command(BaseCommand):
    help = "Serve the upstream simulator (OpenAI and Anthropic protocols) on HOST:PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SIMULATOR_HOST)
        parser.add_argument("--port", type=int, default=settings.SIMULATOR_PORT)
        parser.add_argument(
            "--ttft-ms", type=int, default=0, help="default delay before a stream's first byte"
        )
        parser.add_argument(
            "--tps", type=float, default=0.0, help="default streaming speed (0: unpaced)"
        )
        parser.add_argument(
            "--latency-ms", type=int, default=0, help="default delay before a non-stream reply"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        defaults = Knobs(
            ttft_ms=options["ttft_ms"], tps=options["tps"], latency_ms=options["latency_ms"]
        )
        host, port = options["host"], options["port"]
        self.stdout.write(f"http://{host}:{port}")
        self.stdout.flush()
        server.run(host, port, defaults=defaults)
