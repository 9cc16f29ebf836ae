"""One API call being served: its parsed body, knobs and stats, and the two ways to answer it
(whole, or frame by frame at the knobs' pace)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.simulator.knobs import Knobs
from gateway.simulator.stats import Stats
from gateway.simulator.wire import Exchange, Headers, Request


class Invalid(ValueError):
    """A request the simulator refuses with 400, naming the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Frame:
    """One piece of a stream, and the tokens it delivers."""

    data: bytes
    output_tokens: int = 0
    input_tokens: int = 0


def sse(payload: Any, event: str | None = None) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return f"event: {event}\n".encode() + data if event else data


@dataclass(slots=True)
class Call:
    request: Request
    exchange: Exchange
    body: dict[str, Any]  # the JSON body, or the multipart fields (files as bytes)
    model: str  # the model name without its knobs; what replies echo back
    knobs: Knobs
    stats: Stats
    response_id: str
    headers: Headers  # sent with every reply to this call

    @property
    def is_stream(self) -> bool:
        return self.body.get("stream") is True

    def record(self, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        self.stats.served(
            model=self.model,
            request_id=self.request.headers.get("x-request-id"),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    async def reply(self, payload: Any, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        await self.exchange.respond_json(200, payload, headers=self.headers)
        self.record(input_tokens=input_tokens, output_tokens=output_tokens)

    async def reply_bytes(self, body: bytes, *, content_type: str, output_tokens: int = 0) -> None:
        await self.exchange.respond(200, body, content_type=content_type, headers=self.headers)
        self.record(output_tokens=output_tokens)

    async def play(self, frames: Iterable[Frame]) -> None:
        """Stream `frames` one send each, paced at `tps`; stop when the client leaves, and with
        `drop=N` close the connection abruptly once N tokens are out."""
        await self.exchange.open_stream(headers=self.headers)
        sent = 0
        drop_after, tps = self.knobs.drop_after, self.knobs.tps or self.knobs.gen_tps
        for frame in frames:
            if drop_after is not None and sent >= drop_after:
                return
            if frame.output_tokens and sent and tps and not await self.exchange.pause(1000 / tps):
                return
            if self.exchange.gone.is_set():
                return
            await self.exchange.emit(frame.data)
            self.record(input_tokens=frame.input_tokens, output_tokens=frame.output_tokens)
            sent += frame.output_tokens
        if self.knobs.linger_ms and not await self.exchange.pause(self.knobs.linger_ms):
            return
        await self.exchange.finish()


def int_field(body: dict[str, Any], *names: str) -> int | None:
    """The first of `names` present in `body`, which must be a non-negative integer."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Invalid(f"{name} must be a non-negative integer", name)
        return value
    return None
