"""POST /v1/responses (and /openai/v1/responses): the stateless Responses API, run on the chat
path. The request becomes a chat completions request, the relay serves it exactly as it serves
/v1/chat/completions (any upstream protocol, same admission, retries and settlement), and its
OpenAI-shaped answer or chunks become a Response object or Responses events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from gateway import errors, relay, tokens
from gateway.errors import OPENAI, GatewayError
from gateway.relay import Exchange
from gateway.translate import responses_api, sse
from gateway.translate.errors import TranslationError
from gateway.views.common import endpoint
from gateway.views.media import resolve

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@endpoint(OPENAI)
async def create(request: HttpRequest) -> HttpResponseBase:
    ex = Exchange(surface=OPENAI, endpoint="responses")
    try:
        relay.check_size(request)
        ex.caller = await relay.authenticate(request)
        original = relay.read_json(request)
        ex.body = {"model": original.get("model")}
        try:
            ex.body = responses_api.to_chat(original)
        except TranslationError as exc:
            raise errors.BadRequest(exc.message, param=exc.param) from exc
        ex.model = await resolve(ex.body, ex.caller, kind="chat")
        ex.stream, max_tokens = relay.check_chat(ex.body, OPENAI)
        ex.forwarded = relay.forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        limit = ex.model.max_output_tokens or 1 << 30
        ceiling = min(max_tokens or ex.model.max_output_tokens or 4096, limit)
        estimate = tokens.estimate_request_tokens(len(request.body))
        await relay.admit(ex, request, estimate, ceiling)
        if ex.stream:
            return await _stream(ex, original)
        return await _complete(ex, original)
    except GatewayError as err:
        return await relay._fail(ex, err)


async def _complete(ex: Exchange, original: dict[str, Any]) -> HttpResponse:
    assert ex.model is not None
    chat = await relay._complete(ex)
    completion = orjson.loads(chat.content)
    out = responses_api.to_response(completion, original, model=ex.model.model_id)
    response = HttpResponse(orjson.dumps(out), content_type="application/json")
    for name, value in ex.headers().items():
        response[name] = value
    return response


async def _stream(ex: Exchange, original: dict[str, Any]) -> StreamingHttpResponse:
    assert ex.model is not None
    chat = await relay._stream(ex)
    # The relay's own generator settles the request in its ``finally``. A client that goes away
    # cancels the response, and the cancellation runs that ``finally`` through these iterators;
    # closing Django's wrapper below leaves the relay's generator to asyncio's finalizer.
    relay_body = chat.streaming_content
    assert isinstance(relay_body, AsyncIterator)  # the relay streams asynchronously
    translator = responses_api.ChatToResponses(original, model=ex.model.model_id)

    async def body() -> AsyncIterator[bytes]:
        decoder = sse.SSEDecoder()
        try:
            yield b"".join(responses_api.encode(e) for e in translator.start())
            async for piece in relay_body:
                events: list[responses_api.Event] = []
                for _, data in decoder.feed(piece):
                    events += _translate(translator, data)
                if events:
                    yield b"".join(responses_api.encode(e) for e in events)
            tail = translator.fail("server_error", "The upstream stream ended before it finished.")
            if tail:
                yield b"".join(responses_api.encode(e) for e in tail)
        finally:
            closer = getattr(relay_body, "aclose", None)
            if closer is not None:
                await closer()

    response = StreamingHttpResponse(body(), content_type="text/event-stream", headers=_SSE_HEADERS)
    for name, value in ex.headers().items():
        response[name] = value
    return response


def _translate(translator: responses_api.ChatToResponses, data: str) -> list[responses_api.Event]:
    if data == "[DONE]":
        return translator.done()
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(chunk, dict):
        return []
    error = chunk.get("error")
    if error:
        found = error if isinstance(error, dict) else {"message": str(error)}
        return translator.fail(
            str(found.get("code") or found.get("type") or "server_error"),
            str(found.get("message") or "The upstream failed."),
        )
    return translator.feed(chunk)
