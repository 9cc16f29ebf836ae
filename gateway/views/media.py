"""The OpenAI surface's other endpoints: embeddings, audio transcription and speech, image
generation. Each view parses and checks its request (``gateway/media.py``), then runs the same
pipeline as chat (``gateway/exchange.py``): admit, send through the router, answer, settle once."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from django.http import HttpRequest, HttpResponseBase

from gateway import errors, exchange, media, routing, tokens
from gateway.catalog import RouteInfo
from gateway.errors import OPENAI
from gateway.exchange import Exchange
from gateway.providers import Provider
from gateway.providers.base import http_client
from gateway.views.common import endpoint

# --- embeddings --------------------------------------------------------------------------------


@endpoint(OPENAI)
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="embeddings", steps=_embeddings)


async def _embeddings(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    ex.body = exchange.read_json(request)
    await exchange.resolve(ex, kind="embedding")
    items = media.embedding_inputs(ex.body)
    media.check_embedding_options(ex.body)
    counted = media.embedding_tokens(items)
    await exchange.admit(ex, input_tokens=counted, ceiling=0)
    return exchange.reply_json(ex, await exchange.embed(ex, counted_tokens=counted))


# --- transcription -----------------------------------------------------------------------------


@endpoint(OPENAI)
async def transcriptions(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(
        request, surface=OPENAI, endpoint="transcriptions", steps=_transcriptions
    )


async def _transcriptions(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    fields, name, data = _form(request)
    ex.body = dict(fields)
    await exchange.resolve(ex, kind="transcription")
    media.check_transcription_options(fields)
    seconds, _ = media.audio_seconds(data, media.audio_format(name))
    units = media.billable_seconds(seconds)
    await exchange.admit(ex, input_tokens=1, ceiling=0, units=units)
    build = _multipart_builder(ex, request, name, data)
    opened = await exchange.open_upstream(ex, "transcriptions", build=build, protocol=OPENAI)
    content_type = opened.response.headers.get("content-type", "application/json")
    content = opened.response.content
    if content_type.startswith("application/json"):
        answer = exchange.upstream_json(opened)
        answer["usage"] = {"type": "duration", "seconds": units}
        content = orjson.dumps(answer)
    ex.ttft_ms = ex.elapsed_ms()
    ex.units = units
    return exchange.reply(ex, content, content_type)


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
    ex: Exchange, request: HttpRequest, name: str, data: bytes
) -> routing.BuildFn:
    extra = {k: request.POST.getlist(k) for k in request.POST if k != "model"}

    def build(route: RouteInfo, provider: Provider) -> httpx.Request:
        ex.route = route
        headers = provider.headers(route, exchange.forwarded_for(ex, route))
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
    return await exchange.serve(request, surface=OPENAI, endpoint="speech", steps=_speech)


async def _speech(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    ex.body = exchange.read_json(request)
    await exchange.resolve(ex, kind="speech")
    characters = media.speech_characters(ex.body)
    input_tokens = tokens.count_text(str(ex.body["input"]))
    await exchange.admit(ex, input_tokens=input_tokens, ceiling=0, units=characters)
    fmt = str(ex.body.get("response_format") or "mp3")
    content_type, audio = await exchange.open_byte_stream(
        ex,
        "speech",
        units=characters,
        content_type=media.SPEECH_CONTENT_TYPES.get(fmt, "application/octet-stream"),
    )
    return exchange.reply_stream(ex, audio, content_type)


# --- images ------------------------------------------------------------------------------------


@endpoint(OPENAI)
async def images(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="images", steps=_images)


async def _images(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    ex.body = exchange.read_json(request)
    await exchange.resolve(ex, kind="image")
    wanted = media.image_count(ex.body)
    # The docs' example reads data[0].url without asking; url is our default.
    if ex.body.get("response_format") is None:
        ex.body["response_format"] = "url"
    input_tokens = tokens.count_text(str(ex.body["prompt"]))
    await exchange.admit(ex, input_tokens=input_tokens, ceiling=0, units=wanted)
    data = exchange.upstream_json(await exchange.open_upstream(ex, "images", protocol=OPENAI))
    produced = data.get("data")
    ex.units = min(len(produced), wanted) if isinstance(produced, list) else 0
    ex.ttft_ms = ex.elapsed_ms()
    return exchange.reply_json(ex, data)
