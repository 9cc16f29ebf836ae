"""POST /v1/responses (and /openai/v1/responses): the stateless Responses API, run on the chat
path. The request becomes a chat completions request, the pipeline serves it exactly as it serves
/v1/chat/completions (any upstream protocol, same admission, retries and settlement), and its
OpenAI-shaped answer or chunks become a Response object or Responses events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from django.http import HttpRequest, HttpResponseBase

from gateway import errors, exchange, tokens
from gateway.errors import OPENAI
from gateway.exchange import Exchange
from gateway.translate import responses_api, sse
from gateway.translate.errors import TranslationError
from gateway.views.common import endpoint


@endpoint(OPENAI)
async def create(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="responses", steps=_create)


async def _create(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    original = exchange.read_json(request)
    ex.body = {"model": original.get("model")}
    try:
        ex.body = responses_api.to_chat(original)
    except TranslationError as exc:
        raise errors.BadRequest(exc.message, param=exc.param) from exc
    model = await exchange.resolve(ex, kind="chat")
    shape = exchange.check_chat(ex.body, OPENAI)
    ex.stream = shape.stream
    await exchange.admit(
        ex,
        input_tokens=await tokens.measure_input(ex.body),
        ceiling=exchange.output_ceiling(model, shape),
        requested=exchange.requested_output(model, shape),
    )
    if ex.stream:
        chunks = await exchange.open_chat_stream(ex)
        translator = responses_api.ChatToResponses(original, model=ex.client_model)
        return exchange.reply_stream(ex, _events(translator, chunks))
    completion = await exchange.complete_chat(ex)
    return exchange.reply_json(
        ex, responses_api.to_response(completion, original, model=ex.client_model)
    )


async def _events(
    translator: responses_api.ChatToResponses, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """The chat stream's chunks as Responses events. Closing this closes the chat stream, which
    settles the request: as soon as our client goes away."""
    decoder = sse.SSEDecoder()
    try:
        yield b"".join(responses_api.encode(e) for e in translator.start())
        async for piece in chunks:
            events: list[responses_api.Event] = []
            for _, data in decoder.feed(piece):
                events += _translate(translator, data)
            if events:
                yield b"".join(responses_api.encode(e) for e in events)
        tail = translator.fail("server_error", "The upstream stream ended before it finished.")
        if tail:
            yield b"".join(responses_api.encode(e) for e in tail)
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()


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
