"""POST /v1/responses (and /openai/v1/responses): the stateless Responses API, run on the chat
path. The request becomes a chat completions request, the pipeline serves it exactly as it serves
/v1/chat/completions (any upstream protocol, same admission, retries and settlement), and its
OpenAI-shaped answer or chunks become a Response object or Responses events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from gateway import errors, exchange, tokens
from gateway.catalog import RouteInfo
from gateway.errors import ANTHROPIC, OPENAI
from gateway.exchange import Exchange
from gateway.providers import Provider
from gateway.translate import responses_api, responses_tools, sse
from gateway.translate.errors import TranslationError
from gateway.translate.sealed import Sealer
from gateway.views.common import endpoint, fresh_caller


@endpoint(OPENAI)
async def create(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="responses", steps=_create)


@endpoint(OPENAI)
async def input_tokens(request: HttpRequest) -> HttpResponseBase:
    """POST /responses/input_tokens: what a Responses request's input would cost, counted like
    Anthropic's count_tokens (not admitted, not billed)."""
    return await exchange.serve(
        request, surface=OPENAI, endpoint="count_tokens", steps=_input_tokens, metered=False
    )


# What Anthropic's count_tokens takes of a messages body.
_COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking")


async def _input_tokens(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    ex.caller = await fresh_caller(request)  # no admission here to notice a changed key
    original = exchange.read_json(request)
    ex.body = {"model": original.get("model")}
    sealer = Sealer(secret=settings.SECRET_KEY, account=str(ex.caller.account_id))
    try:
        ex.body, _ = responses_api.to_chat({**original, "stream": False}, sealer=sealer)
    except TranslationError as exc:
        raise errors.BadRequest(exc.message, param=exc.param) from exc
    model = await exchange.resolve(ex, kind="chat")
    if any(r.protocol == ANTHROPIC for r in model.routes):
        # An Anthropic upstream counts exactly; when none answers, and for other upstreams, our
        # tokenizer estimates.
        def build(route: RouteInfo, provider: Provider) -> httpx.Request:
            body = exchange.upstream_body(ex, route)
            counted = orjson.dumps({k: body[k] for k in _COUNTED if k in body})
            return provider.build(route, "count_tokens", counted, exchange.forwarded_for(ex, route))

        try:
            opened = await exchange.open_upstream(
                ex, "count_tokens", build=build, protocol=ANTHROPIC
            )
            counted = exchange.upstream_json(opened).get("input_tokens")
            if isinstance(counted, int):
                return _counted(ex, counted)
        except errors.GatewayError:
            pass
    return _counted(ex, tokens.count_request(ex.body))


def _counted(ex: Exchange, count: int) -> HttpResponseBase:
    return exchange.reply_json(ex, {"object": "response.input_tokens", "input_tokens": count})


async def _create(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    original = exchange.read_json(request)
    ex.body = {"model": original.get("model")}
    assert ex.caller is not None
    sealer = Sealer(secret=settings.SECRET_KEY, account=str(ex.caller.account_id))
    try:
        ex.body, tools = responses_api.to_chat(original, sealer=sealer)
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
        translator = responses_api.ChatToResponses(
            original, model=ex.client_model, tools=tools, sealer=sealer
        )
        return _dropped(exchange.reply_stream(ex, _events(translator, chunks)), tools)
    completion = await exchange.complete_chat(ex)
    answer = responses_api.to_response(
        completion, original, model=ex.client_model, tools=tools, sealer=sealer
    )
    return _dropped(exchange.reply_json(ex, answer), tools)


def _dropped(response: HttpResponseBase, tools: responses_tools.ToolMap) -> HttpResponseBase:
    """Name the hosted tools no upstream here can run, which the request went without."""
    if tools.dropped:
        response[responses_tools.DROPPED_HEADER] = ", ".join(tools.dropped)
    return response


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
