"""Serve the platform with uvicorn, each request started the moment it has arrived
(``manage.py serve``).

This is uvicorn (uvloop, httptools) with one change: uvicorn hands each request to a new task,
which on Python 3.11 waits its turn on the event loop before it runs a line; under load that is
one full trip round a busy loop before the gateway even looks at a request, paid again by every
request. Here a request whose body has fully arrived starts at once, inside the read that brought
it, up to its first real wait (for the upstream's answer), as ``asyncio.eager_task_factory`` does
on Python 3.12 and later; the task uvicorn would have made carries on from there. A request whose
body is still arriving starts as uvicorn starts it.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# How asyncio marks the task a step runs as (private, in every version that has eager tasks); a
# Python without them gets uvicorn's plain start.
_enter_task = getattr(asyncio.tasks, "_enter_task", None)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)


class _Started:
    """How a coroutine's eager first step ended: waiting on ``waiting``, or done."""

    __slots__ = ("done", "error", "value", "waiting")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiting: Any = None

    def run(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        coro: Coroutine[Any, Any, Any],
    ) -> None:
        """One step of ``coro`` now, as ``task`` (so ``current_task()``, timeouts and
        cancellation inside it see the task that will carry it on)."""
        assert _enter_task is not None and _leave_task is not None
        _enter_task(loop, task)
        try:
            self.waiting = coro.send(None)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
        except BaseException as exc:  # handed to the task, which raises it where it would have
            self.done, self.error = True, exc
        finally:
            _leave_task(loop, task)


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, Any], started: _Started) -> Generator[Any, Any, Any]:
    """The rest of a coroutine whose first step ``started`` ran: hand the task what the coroutine
    waits on (a future, or None to yield once), then let the task drive the coroutine itself.

    A cancellation reaches the coroutine wherever it waits, as it would in a plain task, except in
    one window: before the task's own first step (later in the same turn of the loop), when only
    server shutdown could cancel it; the coroutine is then dropped unfinished."""
    if started.error is not None:
        raise started.error
    if started.done:
        return started.value
    waiting = started.waiting
    while True:
        try:
            yield waiting
        except BaseException as exc:  # the task was cancelled while the coroutine waited
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        return (yield from coro)


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
        if held is not None:
            # Started after the parser is done with this read, not from inside its callbacks.
            self._held = None
            cycle, app = held
            if cycle.more_body or _enter_task is None:
                super()._start_asgi_task(cycle, app)
            else:
                self._start_now(cycle, app)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._feeding and self._held is None:
            # The request's headers are in; its body may be in the same read: wait for the end
            # of the read to know.
            self._held = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def _start_now(self, cycle: RequestResponseCycle, app: Any) -> None:
        coro = cycle.run_asgi(app)
        started = _Started()
        context = (
            contextvars.Context() if self.config.reset_contextvars else contextvars.copy_context()
        )
        # The task exists first so that the first step runs as it; its own first step comes
        # later (after this read) and carries on from wherever the first one stopped.
        task = self.loop.create_task(_carry_on(coro, started), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        context.run(started.run, self.loop, task, coro)


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
