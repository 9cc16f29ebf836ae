"""The ASGI edge: read a request, answer it whole or as a stream, and notice when the client
hangs up so a stream stops being generated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    client: str = ""  # the peer's "host:port": one per connection

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


class Exchange:
    """One HTTP request and its response."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()
        self.started = False

    async def read(self, scope: Scope) -> Request:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return Request(
            method=scope["method"],
            path=scope["path"],
            headers=_headers(scope),
            body=b"".join(chunks),
            client=_peer(scope),
        )

    def watch(self) -> None:
        """From now on, watch for the client hanging up."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while not self.gone.is_set():
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def pause(self, ms: float) -> bool:
        """Wait `ms` milliseconds; False when the client left meanwhile."""
        if ms > 0 and not self.gone.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), ms / 1000)
        return not self.gone.is_set()

    async def respond(
        self, status: int, body: bytes, *, content_type: str, headers: Headers = ()
    ) -> None:
        await self._start(
            status,
            [("content-type", content_type), ("content-length", str(len(body))), *headers],
        )
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def respond_json(self, status: int, payload: Any, *, headers: Headers = ()) -> None:
        await self.respond(
            status, orjson.dumps(payload), content_type="application/json", headers=headers
        )

    async def open_stream(self, *, headers: Headers) -> None:
        await self._start(
            200,
            [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
                *headers,
            ],
        )

    async def emit(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        # Let the loop see a hang-up even when nothing else makes this stream wait.
        await asyncio.sleep(0)

    async def finish(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _start(self, status: int, headers: Headers) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
