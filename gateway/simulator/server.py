"""Serve the simulator with uvicorn (what `manage.py simulator` runs).

The simulator stands in for an upstream provider, so it imports nothing of the project outside
``gateway.simulator``: it can be lifted out and run on its own."""

from __future__ import annotations

import gc

import uvicorn

from gateway.simulator.app import build_app
from gateway.simulator.knobs import Knobs


def settle_collector() -> None:
    """Move everything loaded at start-up out of the garbage collector's way and collect the young
    generation less often, as the gateway does (``tokenfactory.runtime``), so a benchmark does not
    measure the simulator's collection pauses."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run(host: str, port: int, *, defaults: Knobs | None = None) -> None:
    settle_collector()
    uvicorn.run(
        build_app(defaults=defaults),
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
