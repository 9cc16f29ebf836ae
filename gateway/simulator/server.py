"""Serve the simulator with uvicorn (what `manage.py simulator` runs)."""

from __future__ import annotations

import uvicorn

from gateway.simulator.app import build_app
from gateway.simulator.knobs import Knobs


def run(host: str, port: int, *, defaults: Knobs | None = None) -> None:
    uvicorn.run(
        build_app(defaults=defaults),
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
