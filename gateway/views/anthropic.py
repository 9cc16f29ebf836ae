"""The Anthropic surface (/anthropic/v1/ and /v1/messages): messages, token counting, models."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from gateway import errors, exchange, tokens
from gateway.errors import ANTHROPIC
from gateway.exchange import Exchange
from gateway.views.common import (
    FILE_ID,
    anthropic_model,
    chat,
    endpoint,
    find_model,
    fresh_caller,
    inline_files,
    reply_json,
    visible_models,
)


@endpoint(ANTHROPIC)
async def messages(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=ANTHROPIC, endpoint="chat", steps=chat)


@endpoint(ANTHROPIC)
async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(
        request, surface=ANTHROPIC, endpoint="count_tokens", steps=_count_tokens, metered=False
    )


async def _count_tokens(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    ex.caller = await fresh_caller(request)  # no admission here to notice a changed key
    ex.body = exchange.read_json(request)
    model = await exchange.resolve(ex, kind="chat")
    if not isinstance(ex.body.get("messages"), list):
        raise errors.BadRequest("'messages' must be an array.", param="messages")
    if FILE_ID in request.body:
        await inline_files(ex)
    if any(r.protocol == ANTHROPIC for r in model.routes):
        # An Anthropic upstream counts exactly (its routes tried in turn, with retries); when
        # none answers, and for other upstreams, our tokenizer estimates.
        try:
            opened = await exchange.open_upstream(ex, "count_tokens", protocol=ANTHROPIC)
            counted = exchange.upstream_json(opened).get("input_tokens")
            if isinstance(counted, int):
                return exchange.reply_json(ex, {"input_tokens": counted})
        except errors.GatewayError:
            pass
    return exchange.reply_json(ex, {"input_tokens": tokens.count_request(ex.body)})


@endpoint(ANTHROPIC, methods=("GET",))
async def models(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    listed = await visible_models(caller)
    try:
        limit = max(1, min(1000, int(request.GET.get("limit", "20"))))
    except ValueError as exc:
        raise errors.BadRequest("'limit' must be a number from 1 to 1000.", param="limit") from exc
    ids = [m.model_id for m in listed]
    start, end = 0, len(listed)
    after, before = request.GET.get("after_id"), request.GET.get("before_id")
    if after:
        start = ids.index(after) + 1 if after in ids else len(ids)
    if before:
        end = ids.index(before) if before in ids else 0
        start = max(start, end - limit)
    page = listed[start:end][:limit]
    has_more = (start + len(page) < end) if not before else start > 0
    return reply_json(
        {
            "data": [anthropic_model(m) for m in page],
            "has_more": has_more,
            "first_id": page[0].model_id if page else None,
            "last_id": page[-1].model_id if page else None,
        },
        ANTHROPIC,
    )


@endpoint(ANTHROPIC, methods=("GET",))
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    return reply_json(anthropic_model(await find_model(caller, model_id)), ANTHROPIC)
