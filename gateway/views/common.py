"""What every inference endpoint shares: method checks, errors in the caller's envelope, request
ids, and the model lists."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from gateway import auth, catalog, errors
from gateway.auth import Caller
from gateway.catalog import ModelInfo
from gateway.relay import authenticate, new_request_id

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
    request_id = new_request_id()
    response = errors.response(err, surface, request_id)
    response["x-request-id"] = request_id
    if surface == errors.ANTHROPIC:
        response["request-id"] = request_id
    return response


def reply_json(data: Any, surface: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
    request_id = new_request_id()
    response["x-request-id"] = request_id
    if surface == errors.ANTHROPIC:
        response["request-id"] = request_id
    return response


async def fresh_caller(request: HttpRequest) -> Caller:
    """Authenticate an endpoint that does not go through admission (which checks freshness)."""
    caller = await authenticate(request)
    if await auth.is_stale(caller):
        refreshed = await auth.authenticate(auth.bearer_from(request), refresh=True)
        if refreshed is None:
            raise errors.Unauthorized("Invalid API key: it is unknown, revoked or expired.")
        caller = refreshed
    return caller


async def visible_models(caller: Caller) -> list[ModelInfo]:
    snap = await catalog.snapshot()
    return [
        m for m in snap.ordered if m.routes and m.is_priced and caller.may_use(m.model_id, m.tier)
    ]


def openai_model(model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
    }


def anthropic_model(model: ModelInfo) -> dict[str, Any]:
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(model.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model.model_id,
        "display_name": model.display_name,
        "created_at": created,
    }


async def find_model(caller: Caller, model_id: str) -> ModelInfo:
    for model in await visible_models(caller):
        if model.model_id == model_id:
            return model
    raise errors.UnknownModel(f"The model '{model_id}' does not exist or your key cannot use it.")
