"""Serve the platform with uvicorn (``manage.py serve``): uvloop, httptools, and every task started
eagerly.

Stock uvicorn, with one setting: its event loop comes from ``new_event_loop`` below (uvicorn's
``loop`` option takes an import string naming a loop factory), a uvloop loop whose task factory
starts tasks eagerly, as ``asyncio.eager_task_factory`` does. A new task then runs at once, up to
its first real wait, instead of waiting its turn on the loop: each request's task as uvicorn makes
it, the tasks Django's handler makes for the view and for the disconnect watch, and aiohttp's
upstream request writer. Under load each of those turns is a full trip round a busy loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# What ``loop=`` names: uvicorn imports it in every worker process and calls it for the loop.
LOOP_FACTORY = "tokenfactory.server:new_event_loop"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop that starts every task eagerly."""
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    loop.set_task_factory(eager_task)
    return loop


def eager_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    *,
    name: str | None = None,
    context: contextvars.Context | None = None,
    eager_start: bool | None = None,
) -> asyncio.Task[Any]:
    """``asyncio.eager_task_factory``, for any loop: uvloop on Python 3.13 hands a task factory
    an ``eager_start`` argument (as asyncio itself will from 3.14), which 3.12's and 3.13's
    ``eager_task_factory`` does not take. Every task starts eagerly, whatever the caller asked."""
    return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for a request's headers: a connection that
    sends none, or starts a request and never finishes its headers, is closed after
    ``HTTP_HEADER_TIMEOUT_SECONDS`` (uvicorn bounds only the idle time between requests). The
    body's own deadline is the ASGI-level guard in ``tokenfactory.handlers``."""

    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.start_header_timer()

    def on_headers_complete(self) -> None:
        self.stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_timer()
        super().connection_lost(exc)

    def start_header_timer(self) -> None:
        if self.header_timer is None:
            seconds = settings.HTTP_HEADER_TIMEOUT_SECONDS
            self.header_timer = self.loop.call_later(seconds, self.headers_too_slow)

    def stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


# How ``manage.py serve`` runs uvicorn, whatever the address and workers: uvloop with eager tasks,
# httptools with a deadline for headers, no lifespan events (the app has none). The tests'
# servers use the same.
OPTIONS: dict[str, Any] = {
    "loop": LOOP_FACTORY,
    "http": "tokenfactory.server:HttpProtocol",
    "lifespan": "off",
}


def prepare_metrics_dir(workers: int) -> Path | None:
    """Prometheus' multiprocess mode for several workers (``gateway.metrics``): the directory in
    ``PROMETHEUS_MULTIPROC_DIR`` (default ``var/prometheus``) emptied of a previous run's files,
    and named in the environment the workers inherit. One worker, with the variable unset, keeps
    its values in memory."""
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not named and workers <= 1:
        return None
    directory = Path(named or settings.VAR_DIR / "prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    uds: str | None = None,
    log_level: str = "info",
    access_log: bool = False,
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
    root_path: str = "",
    timeout_keep_alive: int = 5,
) -> None:
    """Serve ``tokenfactory.asgi`` until interrupted, ``workers`` processes sharing the socket."""
    prepare_metrics_dir(workers)
    uvicorn.run(
        "tokenfactory.asgi:application",
        host=host,
        port=port,
        uds=uds,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        timeout_keep_alive=timeout_keep_alive,
        **OPTIONS,
    )
