"""The hot path's shared store: one asyncio Redis client per event loop, or None when the
platform runs embedded (no REDIS_URL) and every limit lives in this process.

The two commands every request sends (admission, settlement) go through ``call`` instead: one
connection per event loop, every command written in the loop iteration that asked for it (many
requests' commands in one socket write) and every reply parsed by hiredis and handed to its
caller in order. redis-py's asyncio client took a pooled connection, a retry wrapper, a timeout
and a socket write per command: 0.15-0.3 ms of CPU each, most of admission's cost. Each caller
still awaits its own reply, so a command is never assumed done before Redis answered it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import weakref
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)
_sync_client: redis.Redis | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def client() -> aioredis.Redis | None:
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        found = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
            max_connections=256,
        )
        _clients[loop] = found
    return found


def sync_client() -> redis.Redis | None:
    """For workers, commands and views that run outside an event loop."""
    global _sync_client
    if not settings.REDIS_URL:
        return None
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    return _sync_client


# --- the multiplexed connection of the hot path -----------------------------------------------

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 5.0  # a reply later than this closes the connection: its callers get an error


class _Multiplexed(asyncio.Protocol):
    """One Redis connection shared by every request of an event loop (RESP2, pipelined)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.outgoing: list[bytes] = []
        self.lost = False
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.watchdog = self.loop.call_later(1.0, self._watch)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                if self.transport is not None:
                    self.transport.abort()  # connection_lost fails every waiting caller
                return
            if reply is False:
                break
            future = waiting.popleft()[0]
            if future.done():  # its caller was cancelled; the reply is still in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(RedisConnectionError(f"Redis connection lost: {exc}"))

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.lost or self.transport is None:
            raise RedisConnectionError("Redis connection lost")
        future = self.loop.create_future()
        self.waiting.append((future, time.monotonic()))
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        self.outgoing.append(hiredis.pack_command(args))
        return future

    def _flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.lost:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def _watch(self) -> None:
        if self.lost or self.transport is None:
            return
        if self.waiting and time.monotonic() - self.waiting[0][1] > REPLY_TIMEOUT_S:
            self.transport.abort()  # connection_lost fails every waiting caller
            return
        self.watchdog = self.loop.call_later(1.0, self._watch)


# A plain dict: the task refers to its loop, so weak keys would never let go. Entries of closed
# loops (tests run many) are dropped, their sockets closed, whenever a connection opens.
_multiplexed: dict[asyncio.AbstractEventLoop, asyncio.Task[_Multiplexed]] = {}


def _forget_closed_loops() -> None:
    for loop in [loop for loop in _multiplexed if loop.is_closed()]:
        task = _multiplexed.pop(loop)
        if task.done() and not task.cancelled() and task.exception() is None:
            transport = task.result().transport
            if transport is not None:
                # A closed loop cannot run the close callbacks; the socket then goes with the GC.
                with contextlib.suppress(RuntimeError):
                    transport.abort()


async def _open(loop: asyncio.AbstractEventLoop, url: str) -> _Multiplexed:
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, conn = await loop.create_connection(
                lambda: _Multiplexed(loop), parts.hostname or "127.0.0.1", parts.port or 6379
            )
            setup: list[tuple[Any, ...]] = []
            if parts.password is not None:
                user = unquote(parts.username) if parts.username else "default"
                setup.append(("AUTH", user, unquote(parts.password)))
            db = parts.path.strip("/")
            if db and db != "0":
                setup.append(("SELECT", db))
            for args in setup:
                await conn.send(args)
    except TimeoutError as exc:
        raise RedisTimeoutError("Redis did not answer in time") from exc
    except OSError as exc:
        raise RedisConnectionError(f"cannot reach Redis: {exc}") from exc
    return conn


async def call(*args: Any) -> Any:
    """Send one command on this event loop's shared connection and return its reply (bytes,
    ints, lists, as redis-py without decoding); a RedisError when Redis cannot be reached or
    refuses the command."""
    url = settings.REDIS_URL
    if not url.startswith("redis://"):
        # TLS (rediss://) and unix sockets: redis-py's client, one pooled connection a command.
        redis_client = client()
        assert redis_client is not None
        return await redis_client.execute_command(*args)  # type: ignore[no-untyped-call]
    loop = asyncio.get_running_loop()
    opening = _multiplexed.get(loop)
    if opening is None or (
        opening.done()
        and (opening.cancelled() or opening.exception() is not None or opening.result().lost)
    ):
        _forget_closed_loops()
        opening = _multiplexed[loop] = loop.create_task(_open(loop, url))
    # Shielded: a caller cancelled while the connection opens must not cancel it for the others.
    conn = opening.result() if opening.done() else await asyncio.shield(opening)
    return await conn.send(args)
