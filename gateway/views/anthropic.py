"""The Anthropic surface (/anthropic/v1/ and /v1/messages): messages, token counting, models."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from gateway import errors, providers, relay, routing, tokens
from gateway.errors import ANTHROPIC
from gateway.views.common import (
    anthropic_model,
    endpoint,
    find_model,
    fresh_caller,
    reply_json,
    visible_models,
)


@endpoint(ANTHROPIC)
async def messages(request: HttpRequest) -> HttpResponseBase:
    return await relay.chat(request, ANTHROPIC)


@endpoint(ANTHROPIC)
async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    body = relay.read_json(request)
    model = await relay.resolve_model(body, caller, kind="chat")
    if not isinstance(body.get("messages"), list):
        raise errors.BadRequest("'messages' must be an array.", param="messages")
    anthropic_routes = [r for r in model.routes if r.protocol == ANTHROPIC]
    if anthropic_routes:
        # An Anthropic upstream counts exactly; everything else is our tokenizer's estimate.
        try:
            route = routing.ordered(anthropic_routes)[0]
            provider = providers.get(ANTHROPIC)
            import orjson

            payload = dict(body, model=route.upstream_model)
            upstream = provider.build(
                route, "count_tokens", orjson.dumps(payload), relay.forwarded_headers(request)
            )
            response = await provider.send(upstream, stream=False)
            data = orjson.loads(response.content)
            if isinstance(data.get("input_tokens"), int):
                return reply_json({"input_tokens": data["input_tokens"]}, ANTHROPIC)
        except (providers.UpstreamError, ValueError):
            pass
    return reply_json({"input_tokens": tokens.count_request(body)}, ANTHROPIC)


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
