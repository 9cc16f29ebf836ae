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


def start_eagerly(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context,
) -> asyncio.Task[Any]:
    """A task for ``coro`` whose first step has already run, now, in ``context`` and as that
    task (so ``current_task()``, timeouts and cancellation inside it see the task that carries it
    on): Python 3.12's ``eager_start`` for 3.11. The task takes over where the coroutine first
    waited; a coroutine that finished in that step gives the task its result or exception."""
    started = _Started()
    rest = _carry_on(coro, started)
    rest.send(None)  # to its first yield: a cancellation from now on reaches ``coro``
    task = loop.create_task(rest, context=context)
    context.run(started.run, loop, task, coro)
    return task


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
        assert _enter_task is not None and _leave_task is not None
        # Started from inside another task (not from a protocol callback): that one steps aside
        # for the step, as Python 3.12 swaps the current task for an eager start.
        outer = asyncio.current_task(loop)
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, task)
        try:
            self.waiting = coro.send(None)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
        except BaseException as exc:  # handed to the task, which raises it where it would have
            self.done, self.error = True, exc
        finally:
            _leave_task(loop, task)
            if outer is not None:
                _enter_task(loop, outer)


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, Any], started: _Started) -> Generator[Any, Any, Any]:
    """The rest of a coroutine whose first step ``started`` ran: hand the task what the coroutine
    waits on (a future, or None to yield once), then let the task drive the coroutine itself.
    Primed to its first yield before the task exists, so that even a cancellation before the
    task's own first step is thrown into the coroutine rather than past it."""
    thrown: BaseException | None = None
    try:
        yield  # primed here; the task's first step resumes it
    except BaseException as exc:  # the task was cancelled before its first step
        thrown = exc
        if isinstance(started.waiting, asyncio.Future):
            started.waiting.cancel()  # as a task's cancel() cancels what it waits on
    if started.error is not None:
        raise started.error
    if started.done:
        if thrown is not None:
            raise thrown
        return started.value
    waiting = started.waiting
    while True:
        if thrown is not None:
            try:
                waiting = coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            thrown = None
            continue
        try:
            yield waiting
        except BaseException as exc:  # the task was cancelled while the coroutine waited
            thrown = exc
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
        if held is None:
            return
        # Started after the parser is done with this read, not from inside its callbacks.
        cycle, app = held
        if not cycle.more_body and _enter_task is not None:
            self._held = None
            self._start_now(cycle, app)
        elif (
            _enter_task is None
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
