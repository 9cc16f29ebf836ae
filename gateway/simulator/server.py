"""Serve the simulator with uvicorn (what `manage.py simulator` runs)."""

from __future__ import annotations

import gc

import uvicorn

from gateway.simulator.app import build_app
from gateway.simulator.knobs import Knobs


def run(host: str, port: int, *, defaults: Knobs | None = None) -> None:
    # As the gateway does (tokenfactory/asgi.py): what is loaded at start-up stays out of the
    # collector's way, and the young generation is collected less often, so a benchmark does not
    # measure the simulator's collection pauses.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(
        build_app(defaults=defaults),
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
