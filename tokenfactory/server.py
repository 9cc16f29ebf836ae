"""Serve the platform with uvicorn, each request started the moment it has arrived
(``manage.py serve``).

This is uvicorn (uvloop, httptools) with one change: uvicorn hands each request to a new task,
which on Python 3.11 waits its turn on the event loop before it runs a line; under load that is
one full trip round a busy loop before the gateway even looks at a request, paid again by every
request. Here a request starts the moment its body has fully arrived, inside the read that
completed it, up to its first real wait (for the upstream's answer), as
``asyncio.eager_task_factory`` does on Python 3.12 and later; the task uvicorn would have made
carries on from there. A body larger than uvicorn's read buffer, or one that waits for
``Expect: 100-continue``, starts as uvicorn starts it.
"""

from __future__ import annotations

import contextvars
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tokenfactory.eager import CAN_START_EAGERLY, start_eagerly


class EagerHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, starting each fully arrived request at once (see above)."""

    _feeding = False
    _held: tuple[RequestResponseCycle, Any] | None = None

    def data_received(self, data: bytes) -> None:
        self._feeding = True
        try:
            super().data_received(data)
        finally:
            self._feeding = False
        held = self._held
        if held is None:
            return
        # Started after the parser is done with this read, not from inside its callbacks.
        cycle, app = held
        if not cycle.more_body and CAN_START_EAGERLY:
            self._held = None
            self._start_now(cycle, app)
        elif (
            not CAN_START_EAGERLY
            or cycle.waiting_for_100_continue  # the client sends its body once the app asks
            or self.flow.read_paused  # a body past uvicorn's buffer: the app reads it on
            or self.transport.is_closing()
        ):
            self._held = None
            super()._start_asgi_task(cycle, app)
        # Otherwise the body is on its way in the next read (HTTP clients such as httpx, which
        # the OpenAI and Anthropic SDKs use, write headers and body separately): start then.

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._feeding and self._held is None:
            # The request's headers are in; its body may be in this read or the next: hold the
            # start until the body is complete (see data_received).
            self._held = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        self._held = None  # a request whose body never came: nothing to run
        super().connection_lost(exc)

    def _start_now(self, cycle: RequestResponseCycle, app: Any) -> None:
        context = (
            contextvars.Context() if self.config.reset_contextvars else contextvars.copy_context()
        )
        task = start_eagerly(self.loop, cycle.run_asgi(app), context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)


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
    """Serve ``tokenfactory.asgi`` until interrupted: uvloop, httptools with the eager start above,
    no lifespan events (the app has none), ``workers`` processes sharing the socket."""
    uvicorn.run(
        "tokenfactory.asgi:application",
        host=host,
        port=port,
        uds=uds,
        workers=workers,
        loop="uvloop",
        http=EagerHttpToolsProtocol,
        lifespan="off",
        access_log=access_log,
        log_level=log_level,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        timeout_keep_alive=timeout_keep_alive,
    )
