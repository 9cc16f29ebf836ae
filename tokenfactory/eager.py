"""Coroutines started at once, before the event loop gets round to them: Python 3.12's eager task
start, for 3.11, used where a turn of a busy loop would otherwise delay every request (the
server's request tasks, and aiohttp's upstream request writer)."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, cast

# How asyncio marks the task a step runs as (private, in every version that has eager tasks);
# without them, start_eagerly is unavailable (``CAN_START_EAGERLY``).
_enter_task = getattr(asyncio.tasks, "_enter_task", None)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)
CAN_START_EAGERLY = _enter_task is not None and _leave_task is not None


def start_eagerly(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context,
) -> asyncio.Task[Any]:
    """A task for ``coro`` whose first step has already run, now, in ``context`` and as that
    task (so ``current_task()``, timeouts and cancellation inside it see the task that carries it
    on): Python 3.12's ``eager_start`` for 3.11. The task takes over where the coroutine first
    waited; a coroutine that finished in that step gives the task its result or exception."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)
    started = _Started()
    rest = _carry_on(coro, started)
    rest.send(None)  # to its first yield: a cancellation from now on reaches ``coro``
    task = loop.create_task(rest, context=context)
    context.run(started.run_as, loop, task, coro)
    return task


class _Started:
    """How a coroutine's eager first step ended: waiting on ``waiting``, or done."""

    __slots__ = ("done", "error", "value", "waiting")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiting: Any = None

    def run_as(
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
            self.step(coro)
        finally:
            _leave_task(loop, task)
            if outer is not None:
                _enter_task(loop, outer)

    def step(self, coro: Coroutine[Any, Any, Any]) -> None:
        """The first step of ``coro``, as whichever task is current."""
        try:
            self.waiting = coro.send(None)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
        except BaseException as exc:  # handed to the task, which raises it where it would have
            self.done, self.error = True, exc


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


def first_step_now(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """Run ``coro`` now, up to its first wait, as the current task and in the current context;
    return what carries it on, to be awaited or made a task of."""
    if sys.version_info >= (3, 12):
        return coro  # aiohttp starts its writer eagerly itself on 3.12+
    started = _Started()
    started.step(coro)
    rest = _carry_on(coro, started)
    rest.send(None)
    return cast(Coroutine[Any, Any, Any], rest)
