"""The OpenAI surface's other endpoints: embeddings, audio transcription and speech, image
generation. Each is the chat path's shape: authenticate, check, admit, send through the router,
answer, settle once (also on failure and on a client hanging up mid-stream)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from gateway import auto, catalog, errors, media, relay, routing, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo, RouteInfo
from gateway.errors import OPENAI, GatewayError
from gateway.providers import Provider
from gateway.providers.base import http_client
from gateway.relay import Exchange
from gateway.tokens import Usage
from gateway.views.common import endpoint

# --- shared steps ------------------------------------------------------------------------------


async def resolve(body: dict[str, Any], caller: Caller, *, kind: str) -> ModelInfo:
    """The model a request names, or the one ``auto`` picks (see gateway/auto.py)."""
    if auto.is_auto(body):
        return auto.choose(await catalog.snapshot(), caller, body, kind=kind)
    return await relay.resolve_model(body, caller, kind=kind)


def openai_routes(model: ModelInfo) -> ModelInfo:
    """These endpoints exist on OpenAI-protocol upstreams only."""
    routes = tuple(r for r in model.routes if r.protocol == OPENAI)
    if not routes:
        raise errors.ModelUnavailable(
            f"{model.model_id} has no OpenAI-compatible upstream route for this endpoint.",
            param="model",
        )
    return dataclasses.replace(model, routes=routes)


def _reply(ex: Exchange, content: bytes, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    for name, value in ex.headers().items():
        response[name] = value
    return response


async def finish_units(ex: Exchange, *, unit: str, units: int, cost_micros: int) -> None:
    """Settle a unit-priced request (seconds, characters, images): the same settlement and usage
    record as relay._finish, with the cost counted in the model's unit instead of tokens."""
    await relay._finish(ex, cost_micros=cost_micros)


# --- embeddings --------------------------------------------------------------------------------


@endpoint(OPENAI)
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    ex = Exchange(surface=OPENAI, endpoint="embeddings")
    try:
        relay.check_size(request)
        ex.caller = await relay.authenticate(request)
        ex.body = relay.read_json(request)
        ex.model = await resolve(ex.body, ex.caller, kind="embedding")
        items = media.embedding_inputs(ex.body)
        media.check_embedding_options(ex.body)
        counted = media.embedding_tokens(items)
        ex.forwarded = relay.forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        model = openai_routes(ex.model)
        await relay.admit(ex, request, counted, 0)
        opened = await routing.open_upstream(model, relay.builder(ex, "embeddings"), stream=False)
        ex.route = opened.route
        data = relay.upstream_json(opened.response.content)
        reported = Usage.from_openai(data.get("usage"))
        if reported is not None and reported.input_tokens:
            ex.usage = Usage(input_tokens=reported.input_tokens)
        else:
            ex.usage = Usage(input_tokens=counted, is_estimate=True)
        data["model"] = ex.model.model_id
        data["usage"] = {
            "prompt_tokens": ex.usage.input_tokens,
            "total_tokens": ex.usage.input_tokens,
        }
        ex.ttft_ms = relay._elapsed_ms(ex)
        await relay._finish(ex)
        return _reply(ex, orjson.dumps(data), "application/json")
    except GatewayError as err:
        return await relay._fail(ex, err)


# --- transcription -----------------------------------------------------------------------------


@endpoint(OPENAI)
async def transcriptions(request: HttpRequest) -> HttpResponseBase:
    ex = Exchange(surface=OPENAI, endpoint="transcriptions")
    try:
        relay.check_size(request)
        ex.caller = await relay.authenticate(request)
        fields, name, data = _form(request)
        ex.body = dict(fields)
        ex.model = await resolve(ex.body, ex.caller, kind="transcription")
        media.check_transcription_options(fields)
        fmt = media.audio_format(name)
        seconds, _ = media.audio_seconds(data, fmt)
        units = media.billable_seconds(seconds)
        ex.forwarded = relay.forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        model = openai_routes(ex.model)
        await relay.admit(
            ex, request, 1, 0, unit_cost_micros=media.unit_cost_micros(ex.model, units)
        )
        build = _multipart_builder(ex, request, fields, name, data)
        opened = await routing.open_upstream(model, build, stream=False)
        ex.route = opened.route
        content_type = opened.response.headers.get("content-type", "application/json")
        content = opened.response.content
        if content_type.startswith("application/json"):
            answer = relay.upstream_json(content)
            answer["usage"] = {"type": "duration", "seconds": units}
            content = orjson.dumps(answer)
        ex.ttft_ms = relay._elapsed_ms(ex)
        cost = media.unit_cost_micros(ex.model, units)
        await finish_units(ex, unit="seconds", units=units, cost_micros=cost)
        return _reply(ex, content, content_type)
    except GatewayError as err:
        return await relay._fail(ex, err)


def _form(request: HttpRequest) -> tuple[dict[str, str], str, bytes]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise errors.BadRequest(
            "Send the audio as multipart/form-data with a 'file' part.", param="file"
        )
    fields = {name: request.POST[name] for name in request.POST}
    upload = request.FILES.get("file")
    if upload is None:
        raise errors.BadRequest("'file' is required: attach the audio file.", param="file")
    model = fields.get("model")
    if not model:
        raise errors.BadRequest("'model' is required and must be a string.", param="model")
    return fields, upload.name or "", upload.read()


def _multipart_builder(
    ex: Exchange, request: HttpRequest, fields: dict[str, str], name: str, data: bytes
) -> routing.BuildFn:
    extra = {k: request.POST.getlist(k) for k in request.POST if k != "model"}

    def build(route: RouteInfo, provider: Provider) -> httpx.Request:
        forwarded = ex.forwarded
        if "x-sim-options" in forwarded and not route.provider_slug.startswith("sim"):
            forwarded = {k: v for k, v in forwarded.items() if k != "x-sim-options"}
        headers = provider.headers(route, forwarded)
        form: dict[str, Any] = {"model": route.upstream_model, **extra}
        timeout = httpx.Timeout(
            connect=route.connect_timeout_s,
            read=route.first_byte_timeout_s,
            write=route.connect_timeout_s,
            pool=route.connect_timeout_s,
        )
        return http_client().build_request(
            "POST",
            route.base_url + provider.paths["transcriptions"],
            data=form,
            files={"file": (name, data, "application/octet-stream")},
            headers=headers,
            timeout=timeout,
        )

    return build


# --- speech ------------------------------------------------------------------------------------


@endpoint(OPENAI)
async def speech(request: HttpRequest) -> HttpResponseBase:
    ex = Exchange(surface=OPENAI, endpoint="speech")
    try:
        relay.check_size(request)
        ex.caller = await relay.authenticate(request)
        ex.body = relay.read_json(request)
        ex.model = await resolve(ex.body, ex.caller, kind="speech")
        characters = media.speech_characters(ex.body)
        ex.forwarded = relay.forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        model = openai_routes(ex.model)
        await relay.admit(
            ex,
            request,
            tokens.count_text(str(ex.body["input"])),
            0,
            unit_cost_micros=media.unit_cost_micros(ex.model, characters),
        )
        return await _stream_audio(ex, model, characters)
    except GatewayError as err:
        return await relay._fail(ex, err)


async def _stream_audio(ex: Exchange, model: ModelInfo, characters: int) -> StreamingHttpResponse:
    """Pass the upstream's audio through chunk by chunk as it arrives. Billed in full once any
    audio reached the client (the upstream has synthesised it); nothing when none did."""
    assert ex.model is not None
    opened = await routing.open_upstream(model, relay.builder(ex, "speech"), stream=True)
    ex.route = opened.route
    ex.stream = True
    chunks = opened.response.aiter_raw()
    try:
        first = await chunks.__anext__()
    except (StopAsyncIteration, httpx.HTTPError) as exc:
        await opened.response.aclose()
        raise errors.UpstreamFailed(
            "The upstream closed the audio stream before any audio."
        ) from exc
    ex.ttft_ms = relay._elapsed_ms(ex)
    cost = media.unit_cost_micros(ex.model, characters)
    fmt = str(ex.body.get("response_format") or "mp3")
    content_type = opened.response.headers.get("content-type") or media.SPEECH_CONTENT_TYPES.get(
        fmt, "application/octet-stream"
    )
    state = {"finished": False, "failed": False}

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                if chunk:
                    yield chunk
            state["finished"] = True
        except httpx.HTTPError:
            state["failed"] = True
        finally:
            await asyncio.shield(_close_audio(ex, opened.response, state, characters, cost))

    response = StreamingHttpResponse(body(), content_type=content_type)
    for name, value in ex.headers().items():
        response[name] = value
    return response


async def _close_audio(
    ex: Exchange, upstream: httpx.Response, state: dict[str, bool], characters: int, cost: int
) -> None:
    try:
        await upstream.aclose()
    finally:
        if state["failed"]:
            ex.status, ex.error_code = 502, "upstream_error"
        elif not state["finished"]:
            ex.status, ex.error_code = 499, "client_disconnected"
        await finish_units(ex, unit="characters", units=characters, cost_micros=cost)


# --- images ------------------------------------------------------------------------------------


@endpoint(OPENAI)
async def images(request: HttpRequest) -> HttpResponseBase:
    ex = Exchange(surface=OPENAI, endpoint="images")
    try:
        relay.check_size(request)
        ex.caller = await relay.authenticate(request)
        ex.body = relay.read_json(request)
        ex.model = await resolve(ex.body, ex.caller, kind="image")
        wanted = media.image_count(ex.body)
        # The docs' example reads data[0].url without asking; url is our default.
        ex.body.setdefault("response_format", "url")
        if ex.body["response_format"] is None:
            ex.body["response_format"] = "url"
        ex.forwarded = relay.forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        model = openai_routes(ex.model)
        await relay.admit(
            ex,
            request,
            tokens.count_text(str(ex.body["prompt"])),
            0,
            unit_cost_micros=media.unit_cost_micros(ex.model, wanted),
        )
        opened = await routing.open_upstream(model, relay.builder(ex, "images"), stream=False)
        ex.route = opened.route
        data = relay.upstream_json(opened.response.content)
        produced = data.get("data")
        count = min(len(produced), wanted) if isinstance(produced, list) else 0
        ex.ttft_ms = relay._elapsed_ms(ex)
        cost = media.unit_cost_micros(ex.model, count)
        await finish_units(ex, unit="images", units=count, cost_micros=cost)
        return _reply(ex, orjson.dumps(data), "application/json")
    except GatewayError as err:
        return await relay._fail(ex, err)
