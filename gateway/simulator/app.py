"""The simulator's ASGI application: routing, auth, knobs, faults and the control endpoints."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.simulator import anthropic, knobs, media, openai
from gateway.simulator.knobs import BadKnob, Knobs
from gateway.simulator.serving import Call, Invalid
from gateway.simulator.stats import Stats
from gateway.simulator.wire import Exchange, Receive, Request, Scope, Send

Surface = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    surface: Surface
    handler: Callable[[Call], Awaitable[None]]
    multipart: bool = False


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): Endpoint("openai", openai.chat),
    ("POST", "/v1/completions"): Endpoint("openai", openai.completions),
    ("POST", "/v1/embeddings"): Endpoint("openai", openai.embeddings),
    ("POST", "/v1/audio/transcriptions"): Endpoint("openai", openai.transcriptions, True),
    ("POST", "/v1/audio/translations"): Endpoint("openai", openai.translations, True),
    ("POST", "/v1/audio/speech"): Endpoint("openai", openai.speech),
    ("POST", "/v1/images/generations"): Endpoint("openai", openai.images),
    ("POST", "/v1/images/edits"): Endpoint("openai", openai.image_edits, True),
    ("POST", "/v1/images/variations"): Endpoint("openai", openai.image_variations, True),
    ("POST", "/v1/messages"): Endpoint("anthropic", anthropic.messages),
    ("POST", "/v1/messages/count_tokens"): Endpoint("anthropic", anthropic.count_tokens),
}
TOKENIZERS: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/tokenize"): openai.tokenize,
    ("POST", "/extras/tokenize/count"): openai.tokenize_count,
}
_ID_HEADERS: dict[Surface, str] = {"openai": "x-request-id", "anthropic": "request-id"}
_RETRY_STATUSES = frozenset({429, 503, 529})


class Simulator:
    def __init__(self, *, defaults: Knobs, api_key: str | None) -> None:
        self.defaults = defaults
        self.api_key = api_key
        self.stats = Stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        exchange = Exchange(receive, send)
        request = await exchange.read(scope)
        exchange.watch()
        try:
            await self._dispatch(request, exchange)
        finally:
            await exchange.close()

    async def _dispatch(self, request: Request, exchange: Exchange) -> None:
        path, options = knobs.split_path(request.path)
        try:
            defaults = knobs.apply(self.defaults, options)
        except BadKnob as exc:
            await _fail(exchange, "openai", 400, str(exc), headers=[])
            return
        route = (request.method, path.rstrip("/") or "/")
        if route == ("GET", "/_sim/stats"):
            await exchange.respond_json(200, self.stats.snapshot())
        elif route == ("POST", "/_sim/reset"):
            self.stats.reset()
            await exchange.respond_json(200, {"ok": True})
        elif route == ("GET", "/v1/models"):
            await self._models(request, exchange)
        elif route in ENDPOINTS:
            await self._serve(request, exchange, ENDPOINTS[route], defaults)
        elif route in TOKENIZERS and defaults.tokenizer == "alt":
            await self._tokenize(request, exchange, TOKENIZERS[route])
        else:
            surface: Surface = "anthropic" if request.path.startswith("/v1/messages") else "openai"
            message = f"Invalid URL ({request.method} {request.path})"
            await _fail(exchange, surface, 404, message, headers=[])

    async def _models(self, request: Request, exchange: Exchange) -> None:
        surface: Surface = "anthropic" if request.header("anthropic-version") else "openai"
        if not self._is_authorized(request):
            await _fail(exchange, surface, 401, "invalid API key", headers=[])
        elif surface == "anthropic":
            await exchange.respond_json(200, anthropic.models())
        else:
            await exchange.respond_json(200, openai.models())

    async def _tokenize(
        self,
        request: Request,
        exchange: Exchange,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        if not self._is_authorized(request):
            await _fail(exchange, "openai", 401, "invalid API key", headers=[])
            return
        try:
            answer = handler(_body(request, multipart=False))
        except Invalid as exc:
            await _fail(exchange, "openai", 400, str(exc), headers=[], param=exc.param)
            return
        await exchange.respond_json(200, answer)

    async def _serve(
        self, request: Request, exchange: Exchange, endpoint: Endpoint, defaults: Knobs
    ) -> None:
        response_id = uuid.uuid4().hex[:24]
        headers = [(_ID_HEADERS[endpoint.surface], f"req_sim{response_id}")]
        if not self._is_authorized(request):
            await _fail(exchange, endpoint.surface, 401, "invalid API key", headers=headers)
            return
        try:
            body = _body(request, multipart=endpoint.multipart)
            raw_model = body.get("model")
            if not isinstance(raw_model, str) or not raw_model:
                raise Invalid("model must be a non-empty string", "model")
            model, chosen = knobs.resolve(raw_model, request.header("x-sim-options"), defaults)
        except (Invalid, BadKnob) as exc:
            param = exc.param if isinstance(exc, Invalid) else "model"
            await _fail(exchange, endpoint.surface, 400, str(exc), headers=headers, param=param)
            return
        if chosen.uuid_ids and not _is_uuid(request.header("x-request-id")):
            # llama-cpp-python's request-id middleware (starlette-context), before anything else.
            await exchange.respond(
                400,
                b"Invalid UUID in request header X-Request-ID",
                content_type="text/plain; charset=utf-8",
                headers=[],
            )
            return
        if chosen.echo_headers:
            headers.append(("x-sim-received-headers", json.dumps(request.headers)))
        self.stats.last_headers = dict(request.headers)
        fault_key = f"{raw_model}|{request.header('x-sim-options')}"
        ordinal = self.stats.begin(model=model, fault_key=fault_key, client=request.client)
        delay_ms = chosen.first_byte_delay_ms(stream=body.get("stream") is True)
        if not await exchange.pause(delay_ms):
            return
        status = chosen.fault_status(ordinal)
        if status is not None:
            self.stats.fail(model=model)
            if status in _RETRY_STATUSES:
                headers.append(("retry-after", str(chosen.retry_after_s)))
            if chosen.error_page:
                await exchange.respond(
                    status, error_page(status), content_type="text/html", headers=headers
                )
                return
            message = f"Simulated upstream failure (status {status})"
            await _fail(exchange, endpoint.surface, status, message, headers=headers)
            return
        call = Call(request, exchange, body, model, chosen, self.stats, response_id, headers)
        try:
            await endpoint.handler(call)
        except Invalid as exc:
            if not exchange.started:
                await _fail(
                    exchange, endpoint.surface, 400, str(exc), headers=headers, param=exc.param
                )

    def _is_authorized(self, request: Request) -> bool:
        if not self.api_key:
            return True
        bearer = request.header("authorization").removeprefix("Bearer ").strip()
        return self.api_key in (bearer, request.header("x-api-key"))


def _is_uuid(value: str) -> bool:
    """An absent id passes (the server makes its own); a present one must be a UUID."""
    if not value:
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _body(request: Request, *, multipart: bool) -> dict[str, Any]:
    if multipart:
        try:
            return dict(media.parse_multipart(request.header("content-type"), request.body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"could not parse the multipart body: {exc}") from exc
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"could not parse the JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object")
    return body


def error_page(status: int) -> bytes:
    """What an internal service behind a mistaken provider URL answers: an HTML page with
    details nobody outside should read."""
    return (
        f"<html><head><title>{status} Internal Server Error</title></head><body>"
        f"<h1>admin-console.internal</h1><pre>db password: hunter2 (status {status})</pre>"
        "</body></html>"
    ).encode()


async def _fail(
    exchange: Exchange,
    surface: Surface,
    status: int,
    message: str,
    *,
    headers: list[tuple[str, str]],
    param: str | None = None,
) -> None:
    if surface == "anthropic":
        request_id = next((v for k, v in headers if k == "request-id"), "req_sim")
        payload = anthropic.error_body(status, message, request_id=request_id)
    else:
        payload = openai.error_body(status, message, param=param)
    await exchange.respond_json(status, payload, headers=headers)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_app(*, defaults: Knobs | None = None, api_key: str | None = None) -> Simulator:
    """The simulator as an ASGI callable. `defaults` are the knobs of a request that sets none;
    `api_key` (default: the SIMULATOR_API_KEY environment variable) makes it refuse other keys."""
    key = api_key if api_key is not None else os.environ.get("SIMULATOR_API_KEY") or None
    return Simulator(defaults=defaults or Knobs(), api_key=key)
