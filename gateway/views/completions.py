"""The legacy text completions endpoint (/openai/v1/completions and /v1/completions), for every
chat model. A model whose upstreams all speak the OpenAI protocol gets the request forwarded to
their ``/completions``; an upstream that answers 404 there (a chat-only model, as OpenAI's own
answer) is remembered and, like an Anthropic-protocol upstream, served by translating each prompt
to a chat request (``gateway/completions.py``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponseBase

from gateway import completions, errors, exchange, tokens
from gateway.catalog import ModelInfo
from gateway.errors import OPENAI
from gateway.exchange import Exchange
from gateway.tokens import Usage
from gateway.translate import sse
from gateway.views.common import endpoint

# (upstream base URL, upstream model) pairs that answered 404 at /completions: served by chat.
_chat_only: set[tuple[str, str]] = set()


@endpoint(OPENAI)
async def create(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="completions", steps=_steps)


def _native(model: ModelInfo) -> bool:
    return bool(model.routes) and all(
        r.protocol == OPENAI and (r.base_url, r.upstream_model) not in _chat_only
        for r in model.routes
    )


async def _steps(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    body = exchange.read_json(request)
    ex.body = body
    model = await exchange.resolve(ex, kind="chat")
    shape = completions.check(body)
    exchange.check_sampling(body, OPENAI)
    ex.stream = shape.stream
    native = _native(model)
    if not native:
        completions.check_translatable(body, shape)
    per_choice = min(shape.max_tokens, model.max_output_tokens or 1 << 30)
    # max_tokens defaults to 16 here, so what a request asks for is always known.
    ceiling = per_choice * shape.generated * len(shape.prompts)
    await exchange.admit(
        ex, input_tokens=await _input_size(body, shape), ceiling=ceiling, requested=ceiling
    )
    if native:
        try:
            return await _forwarded(ex, shape)
        except errors.UpstreamNotFound:
            if ex.route is None:
                raise
            _chat_only.add((ex.route.base_url, ex.route.upstream_model))
            completions.check_translatable(body, shape)
            ex.route = None
    return await _translated(ex, body, shape)


async def _input_size(body: dict[str, Any], shape: completions.Shape) -> tokens.InputSize:
    """The prompts' size: text measured as chat text is, token ids counted as they are."""
    size = await tokens.measure_input(body)
    ids = sum(len(p) for p in shape.prompts if isinstance(p, list))
    return tokens.InputSize(estimate=size.estimate + ids, bound=size.bound + ids)


# --- forwarded to the upstream's /completions ---------------------------------------------------


async def _forwarded(ex: Exchange, shape: completions.Shape) -> HttpResponseBase:
    assert ex.model is not None
    if ex.stream:
        stream = await exchange.open_chat_stream(ex, operation="completions", protocol=OPENAI)
        return exchange.reply_stream(ex, stream)
    opened = await exchange.open_upstream(ex, "completions", protocol=OPENAI)
    data = exchange.upstream_json(opened)
    data["model"] = ex.client_model
    usage = Usage.from_openai(data.get("usage"))
    if usage is None or not usage.input_tokens:
        texts = "".join(str(c.get("text") or "") for c in data.get("choices") or ())
        usage = exchange.estimate_usage(ex, texts, known=usage)
        data["usage"] = usage.to_openai()
    ex.usage = usage
    ex.ttft_ms = ex.elapsed_ms()
    return exchange.reply_json(ex, data)


# --- translated to chat -------------------------------------------------------------------------


async def _translated(
    ex: Exchange, body: dict[str, Any], shape: completions.Shape
) -> HttpResponseBase:
    assert ex.model is not None
    prompts = [str(p) for p in shape.prompts]
    if ex.stream and len(prompts) == 1:
        ex.body = completions.chat_body(body, prompts[0], stream=True)
        stream = await exchange.open_chat_stream(ex)
        echoed = prompts[0] if shape.echo else ""
        return exchange.reply_stream(ex, _completion_chunks(stream, echoed, shape.choices))
    choices: list[dict[str, Any]] = []
    total = Usage()
    first: dict[str, Any] = {}
    for i, prompt in enumerate(prompts):
        ex.body = completions.chat_body(body, prompt, stream=False)
        ex.spent = total if i else None  # if this prompt fails, the ones before it are billed
        chat = await exchange.complete_chat(ex)
        first = first or chat
        choices += completions.from_chat(
            chat, prompt=prompt, echo=shape.echo, index_base=i * shape.choices
        )
        used = ex.usage or Usage()
        total = Usage(
            input_tokens=total.input_tokens + used.input_tokens,
            output_tokens=total.output_tokens + used.output_tokens,
            cached_tokens=total.cached_tokens + used.cached_tokens,
            cache_write_tokens=total.cache_write_tokens + used.cache_write_tokens,
            reasoning_tokens=total.reasoning_tokens + used.reasoning_tokens,
            is_estimate=total.is_estimate or used.is_estimate,
        )
        ex.usage = total
    answer = {
        "id": str(first.get("id") or f"cmpl-{ex.request_id}").replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": first.get("created") or int(time.time()),
        "model": ex.client_model,
        "choices": choices,
        "usage": total.to_openai(),
    }
    if not ex.stream:
        return exchange.reply_json(ex, answer)
    # Several prompts streamed: answered together once all are done, in the stream's shape.
    return exchange.reply_stream(ex, _replayed(answer, _wants_usage(body)))


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _replayed(answer: dict[str, Any], with_usage: bool) -> AsyncIterator[bytes]:
    head = {k: answer[k] for k in ("id", "object", "created", "model")}
    for choice in answer["choices"]:
        yield sse.encode_openai({**head, "choices": [{**choice, "finish_reason": None}]})
        done = {**choice, "text": "", "finish_reason": choice["finish_reason"]}
        yield sse.encode_openai({**head, "choices": [done]})
    if with_usage:
        yield sse.encode_openai({**head, "choices": [], "usage": answer["usage"]})
    yield sse.DONE


async def _completion_chunks(
    chat: AsyncIterator[bytes], echoed: str, choices: int
) -> AsyncIterator[bytes]:
    """A chat stream in the OpenAI shape, re-shaped chunk by chunk as completions chunks. The chat
    stream's own end settles the request (closing this closes it)."""
    decoder = sse.SSEDecoder()
    async with contextlib.aclosing(chat):  # type: ignore[type-var]
        async for raw in chat:
            out: list[bytes] = []
            for _, data in decoder.feed(raw):
                if data == "[DONE]":
                    out.append(sse.DONE)
                    continue
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(chunk, dict) or chunk.get("error"):
                    out.append(sse.encode_openai(chunk) if isinstance(chunk, dict) else b"")
                    continue
                if echoed:
                    # echo: the prompt first, once per choice, before any generated text.
                    lead = {
                        "id": str(chunk.get("id", "")).replace("chatcmpl-", "cmpl-", 1),
                        "object": "text_completion",
                        "created": chunk.get("created"),
                        "model": chunk.get("model"),
                        "choices": [
                            {"text": echoed, "index": i, "logprobs": None, "finish_reason": None}
                            for i in range(choices)
                        ],
                    }
                    out.append(sse.encode_openai(lead))
                    echoed = ""
                converted = completions.chunk_from_chat(chunk, index_base=0)
                if converted is not None:
                    out.append(sse.encode_openai(converted))
            if out:
                yield b"".join(out)
