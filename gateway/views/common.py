"""What every inference endpoint shares: method checks, errors in the caller's envelope, the chat
steps both surfaces run, and the model lists."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from gateway import auth, catalog, errors, exchange, files_api, limits, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo
from gateway.errors import ANTHROPIC
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
                response = await view(request, *args, **kwargs)
            except errors.GatewayError as err:
                response = reply_error(err, surface)
            return await with_limit_headers(request, response)

        return wrapped

    return wrap


async def with_limit_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """Every answer to a request whose key authenticated carries the rate-limit headers: an
    admitted request's come from its admission (no extra read); any other answer's (model lists,
    usage, batches, files, count_tokens, an error before admission) from one read of the limits.
    An answer before the key was known (401, a wrong method or path) carries none."""
    if RESET_HEADER in response or response.status_code == 401:
        return response
    caller = auth.remembered(request)
    if caller is None:
        return response
    for name, value in (await limits.current_headers(caller)).items():
        response[name] = value
    return response


RESET_HEADER = "X-RateLimit-Reset"


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
    if ex.surface == ANTHROPIC and FILE_ID in request.body:
        await inline_files(ex)  # before measuring: the files' content is the input too
    await exchange.admit(
        ex,
        input_tokens=await tokens.measure_input(ex.body),
        ceiling=exchange.output_ceiling(model, shape),
        requested=exchange.requested_output(model, shape),
    )
    if ex.stream:
        return exchange.reply_stream(ex, await exchange.open_chat_stream(ex))
    return exchange.reply_json(ex, await exchange.complete_chat(ex))


# Only a body holding this can refer to an uploaded file: the walk is skipped for all others.
FILE_ID = b'"file_id"'


async def inline_files(ex: Exchange) -> None:
    """Replace the body's Files API blocks by their files' content (the caller's own files)."""
    assert ex.caller is not None
    ex.body = await sync_to_async(files_api.inline_files)(ex.body, account_id=ex.caller.account_id)


async def fresh_caller(request: HttpRequest) -> Caller:
    """Authenticate an endpoint that does not go through admission (which checks freshness)."""
    caller = await exchange.authenticate(request)
    if await auth.is_stale(caller):
        refreshed = await auth.authenticate(auth.bearer_from(request), refresh=True)
        if refreshed is None:
            raise errors.Unauthorized("Invalid API key: it is unknown, revoked or expired.")
        caller = refreshed
        auth.remember(request, caller)
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


_PRICE_UNITS = {"seconds": "second", "characters": "1M characters", "images": "image"}


def pricing(model: ModelInfo) -> dict[str, Any]:
    """A model's list prices, in integer micro-dollars (1 USD = 1,000,000): per 1M tokens for a
    token-priced model, per unit (second of audio, 1M characters, image) otherwise."""
    if model.unit != "tokens":
        unit = _PRICE_UNITS.get(model.unit, model.unit)
        return {"currency": "USD", "unit": unit, "unit_micros": model.unit_price_micros}
    return {
        "currency": "USD",
        "unit": "1M tokens",
        "input_micros": model.input_price_micros,
        "output_micros": model.output_price_micros,
        "cached_input_micros": model.cached_input_price_micros,
    }


def capabilities(model: ModelInfo) -> dict[str, Any]:
    return {
        "kind": model.kind,
        "tools": model.supports_tools,
        "vision": model.supports_vision,
        "json": model.supports_json,
        "thinking": model.supports_thinking,
        "ultrafast": model.ultrafast,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
    }


def openai_model(model: ModelInfo) -> dict[str, Any]:
    """OpenAI's Model, plus ``display_name``, ``pricing`` and ``capabilities`` (the SDK keeps
    fields it does not know as extras)."""
    return {
        "id": model.model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "display_name": model.display_name,
        "pricing": pricing(model),
        "capabilities": capabilities(model),
    }


def _supported(value: bool) -> dict[str, bool]:
    return {"supported": value}


def anthropic_capabilities(model: ModelInfo) -> dict[str, Any]:
    """Anthropic's ModelCapabilities shape (every key its SDK types), then ours in the same
    ``{"supported": bool}`` form (``tool_use``, ``ultrafast``) and the model's ``kind``."""
    thinks = model.supports_thinking
    return {
        "batch": _supported(model.kind in ("chat", "embedding")),
        "citations": _supported(False),
        "code_execution": _supported(False),
        "context_management": _supported(False),
        "effort": {
            "supported": thinks,
            **{level: _supported(thinks) for level in ("low", "medium", "high", "max")},
        },
        "image_input": _supported(model.supports_vision),
        "pdf_input": _supported(False),
        "server_tools": {
            "supported": False,
            "code_execution": _supported(False),
            "web_search": _supported(False),
        },
        "structured_outputs": _supported(model.supports_json),
        "thinking": {
            "supported": thinks,
            "types": {
                "adaptive": _supported(thinks),
                "between_tools": _supported(False),
                "disabled": _supported(True),
                "enabled": _supported(thinks),
            },
        },
        "tool_use": _supported(model.supports_tools),
        "ultrafast": _supported(model.ultrafast),
        "kind": model.kind,
    }


def anthropic_model(model: ModelInfo) -> dict[str, Any]:
    """Anthropic's ModelInfo (``capabilities`` in its own shape), plus ``pricing``."""
    created = datetime.fromtimestamp(model.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model.model_id,
        "display_name": model.display_name,
        "created_at": created,
        "lifecycle": "active",
        "max_input_tokens": model.context_window or None,
        "max_tokens": model.max_output_tokens or None,
        "capabilities": anthropic_capabilities(model),
        "pricing": pricing(model),
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
