"""Websocket routes (Channels): the live meter, the Responses API's websocket transport refused
with a 426 (clients such as Codex then use HTTP at once), and a refusal for every other path."""

from __future__ import annotations

import re
from typing import Any

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from gateway import errors
from gateway.consumers import MeterConsumer


class Refuse(AsyncWebsocketConsumer):
    """A websocket to a path that has none: closed before it is accepted (the upgrade is answered
    403), rather than Channels' "No route found" error and a 500."""

    async def connect(self) -> None:
        await self.close()


RESPONSES_OVER_HTTP = orjson.dumps(
    errors.envelope(
        message="This gateway serves the Responses API over HTTP only: POST to this URL.",
        type="invalid_request_error",
        param=None,
        code="websocket_not_supported",
    )
)


RESPONSES_PATH = re.compile(r"^/*(openai/)?v1/responses/?$")


def responses_first(inner: Any) -> Any:
    """Websockets to the Responses API go to ``responses_over_http`` (API clients send no Origin,
    which the dashboard's origin check refuses), every other one to ``inner``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if RESPONSES_PATH.match(scope.get("path", "")):
            await responses_over_http(scope, receive, send)
        else:
            await inner(scope, receive, send)

    return app


async def responses_over_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``wss://.../responses`` (Codex with ``supports_websockets``): answered 426 Upgrade Required
    with an OpenAI error body, which Codex takes as "use HTTP" without retrying. A server without
    the ASGI websocket denial-response extension closes the handshake instead (a 403)."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close"})
        return
    headers = [(b"content-type", b"application/json"), (b"upgrade", b"HTTP/1.1")]
    await send({"type": "websocket.http.response.start", "status": 426, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": RESPONSES_OVER_HTTP})


websocket_urlpatterns: list[Any] = [
    path("ws/meter/", MeterConsumer.as_asgi()),
    re_path(r"", Refuse.as_asgi()),
]
