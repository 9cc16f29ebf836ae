"""What every inference endpoint shares: method checks, errors in the caller's envelope, the chat
steps both surfaces run, and the model lists."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from gateway import auth, catalog, errors, exchange, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo
from gateway.exchange import Exchange

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def endpoint(surface: str, methods: tuple[str, ...] = ("POST",)) -> Callable[[View], View]:
    """Wrap an async inference view: CSRF off (keys, not cookies), the allowed methods, and any
    GatewayError answered in the surface's own envelope."""

    def wrap(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return reply_error(
                    errors.MethodNotAllowed(
                        f"{request.method} is not allowed here; use {' or '.join(methods)}."
                    ),
                    surface,
                )
            try:
                return await view(request, *args, **kwargs)
            except errors.GatewayError as err:
                return reply_error(err, surface)

        return wrapped

    return wrap


def reply_error(err: errors.GatewayError, surface: str) -> HttpResponse:
    """An error outside the pipeline (a wrong method or path, the batch and model endpoints)."""
    return errors.response(err, surface, exchange.new_request_id())


def reply_json(data: Any, surface: str, status: int = 200) -> HttpResponse:
    return errors.json_response(data, surface, exchange.new_request_id(), status=status)


async def chat(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    """Chat on either surface (/v1/chat/completions, /v1/messages)."""
    ex.body = exchange.read_json(request)
    model = await exchange.resolve(ex, kind="chat")
    shape = exchange.check_chat(ex.body, ex.surface)
    ex.stream = shape.stream
    await exchange.admit(
        ex,
        input_tokens=await tokens.measure_input(ex.body),
        ceiling=exchange.output_ceiling(model, shape),
        requested=exchange.requested_output(model, shape),
    )
    if ex.stream:
        return exchange.reply_stream(ex, await exchange.open_chat_stream(ex))
    return exchange.reply_json(ex, await exchange.complete_chat(ex))


async def fresh_caller(request: HttpRequest) -> Caller:
    """Authenticate an endpoint that does not go through admission (which checks freshness)."""
    caller = await exchange.authenticate(request)
    if await auth.is_stale(caller):
        refreshed = await auth.authenticate(auth.bearer_from(request), refresh=True)
        if refreshed is None:
            raise errors.Unauthorized("Invalid API key: it is unknown, revoked or expired.")
        caller = refreshed
    return caller


async def visible_models(caller: Caller) -> list[ModelInfo]:
    """The models the caller may use, with the exact-name aliases among them (under the alias's
    name, described by the model that serves the caller); patterns cannot be listed."""
    snap = await catalog.snapshot()
    listed = [m for m in snap.ordered if exchange.usable(m, caller, kind=m.kind)]
    models = len(listed)
    for name in snap.exact_aliases:
        if name in snap.models:
            continue  # a catalog id always means that model
        for model in catalog.candidates(snap, name):
            if exchange.usable(model, caller, kind=model.kind):
                display = f"{name} (served by {model.display_name})"
                listed.append(dataclasses.replace(model, model_id=name, display_name=display))
                break
    if len(listed) > models:
        listed.sort(key=lambda m: m.model_id)
    return listed


def openai_model(model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
    }


def anthropic_model(model: ModelInfo) -> dict[str, Any]:
    created = datetime.fromtimestamp(model.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model.model_id,
        "display_name": model.display_name,
        "created_at": created,
    }


async def find_model(caller: Caller, model_id: str) -> ModelInfo:
    """One model the caller may use, by id or by any name an alias (also a pattern) gives it."""
    for model in await visible_models(caller):
        if model.model_id == model_id:
            return model
    for model in catalog.candidates(await catalog.snapshot(), model_id):
        if exchange.usable(model, caller, kind=model.kind):
            display = f"{model_id} (served by {model.display_name})"
            return dataclasses.replace(model, model_id=model_id, display_name=display)
    raise errors.UnknownModel(f"The model '{model_id}' does not exist or your key cannot use it.")
