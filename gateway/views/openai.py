"""The OpenAI surface (/openai/v1/ and /v1/): chat completions and the model list."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from gateway import exchange
from gateway.errors import OPENAI
from gateway.views.common import (
    chat,
    endpoint,
    find_model,
    fresh_caller,
    openai_model,
    reply_json,
    visible_models,
)


@endpoint(OPENAI)
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="chat", steps=chat)


@endpoint(OPENAI, methods=("GET",))
async def models(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    data = [openai_model(m) for m in await visible_models(caller)]
    return reply_json({"object": "list", "data": data}, OPENAI)


@endpoint(OPENAI, methods=("GET",))
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    return reply_json(openai_model(await find_model(caller, model_id)), OPENAI)
