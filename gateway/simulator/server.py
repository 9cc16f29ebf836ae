"""Serve the simulator with uvicorn (what `manage.py simulator` runs)."""

from __future__ import annotations

import uvicorn

from gateway.simulator.app import build_app
from gateway.simulator.knobs import Knobs
from tokenfactory.runtime import settle_collector


def run(host: str, port: int, *, defaults: Knobs | None = None) -> None:
    # As the gateway does, so a benchmark does not measure the simulator's collection pauses.
    settle_collector()
    uvicorn.run(
        build_app(defaults=defaults),
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
