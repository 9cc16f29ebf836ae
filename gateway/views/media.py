"""The OpenAI surface's other endpoints: embeddings, audio transcription and speech, image
generation. Each view parses and checks its request (``gateway/media.py``), then runs the same
pipeline as chat (``gateway/exchange.py``): admit, send through the router, answer, settle once."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

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


# --- transcription and translation -------------------------------------------------------------


@endpoint(OPENAI)
async def transcriptions(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(
        request, surface=OPENAI, endpoint="transcriptions", steps=_transcriptions
    )


@endpoint(OPENAI)
async def translations(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(
        request, surface=OPENAI, endpoint="translations", steps=_translations
    )


async def _transcriptions(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    return await _audio_to_text(ex, request, "transcriptions")


async def _translations(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    return await _audio_to_text(ex, request, "translations")


async def _audio_to_text(ex: Exchange, request: HttpRequest, operation: str) -> HttpResponseBase:
    """Transcription, or translation into English: the same upload, checks and price (seconds
    of audio, rounded up, with the 10-second minimum)."""
    fields, files = _form(request, ("file",))
    name, data, _ = files["file"][0]
    ex.body = dict(fields)
    await exchange.resolve(ex, kind="transcription")
    if operation == "translations":
        media.check_translation_options(fields)
    else:
        media.check_transcription_options(fields)
    seconds, _ = media.audio_seconds(data, media.audio_format(name))
    units = media.billable_seconds(seconds)
    await exchange.admit(ex, input_tokens=1, ceiling=0, units=units)
    build = _multipart_builder(ex, request, operation, files)
    opened = await exchange.open_upstream(ex, operation, build=build, protocol=OPENAI)
    content_type = opened.response.headers.get("content-type", "application/json")
    content = opened.response.content
    if content_type.startswith("application/json"):
        answer = exchange.upstream_json(opened)
        answer["usage"] = {"type": "duration", "seconds": units}
        content = orjson.dumps(answer)
    ex.ttft_ms = ex.elapsed_ms()
    ex.units = units
    return exchange.reply(ex, content, content_type)


Upload = tuple[str, bytes, str]  # file name, bytes, content type


def _form(
    request: HttpRequest, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, list[Upload]]]:
    """A multipart request's text fields and its files by field name (``image[]`` read as
    ``image``); a 400 naming the field for anything missing."""
    content_type = request.headers.get("content-type", "")
    first = required[0]
    if not content_type.startswith("multipart/form-data"):
        raise errors.BadRequest(
            f"Send the request as multipart/form-data with a '{first}' part.", param=first
        )
    try:
        fields = {name: request.POST[name] for name in request.POST}
        files: dict[str, list[Upload]] = {}
        for key in request.FILES:
            name = key.removesuffix("[]")
            if name not in required and name not in optional:
                continue
            for upload in request.FILES.getlist(key):
                found = (upload.name or "", upload.read(), upload.content_type or "")
                files.setdefault(name, []).append(found)
    except (MultiPartParserError, RequestDataTooBig) as exc:
        raise errors.BadRequest(
            f"The upload is not a well-formed multipart form: {exc}", param=first
        ) from exc
    for name in required:
        if name not in files:
            raise errors.BadRequest(f"'{name}' is required: attach the file.", param=name)
    model = fields.get("model")
    if not model:
        raise errors.BadRequest("'model' is required and must be a string.", param="model")
    return fields, files


def _multipart_builder(
    ex: Exchange,
    request: HttpRequest,
    operation: str,
    files: dict[str, list[Upload]],
    overrides: dict[str, str] | None = None,
) -> routing.BuildFn:
    extra: dict[str, Any] = {k: request.POST.getlist(k) for k in request.POST if k != "model"}
    extra.update(overrides or {})
    parts: list[tuple[str, tuple[str, bytes, str]]] = []
    for name, uploads in files.items():
        key = f"{name}[]" if len(uploads) > 1 else name
        for filename, data, content_type in uploads:
            parts.append((key, (filename, data, content_type or "application/octet-stream")))

    def build(route: RouteInfo, provider: Provider) -> httpx.Request:
        ex.route = route
        headers = provider.headers(route, exchange.forwarded_for(ex, route))
        form: dict[str, Any] = {**extra, "model": route.upstream_model}
        timeout = httpx.Timeout(
            connect=route.connect_timeout_s,
            read=route.first_byte_timeout_s,
            write=route.connect_timeout_s,
            pool=route.connect_timeout_s,
        )
        return http_client().build_request(
            "POST",
            route.base_url + provider.paths[operation],
            data=form,
            files=parts,
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


@endpoint(OPENAI)
async def image_edits(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(request, surface=OPENAI, endpoint="image_edits", steps=_edits)


@endpoint(OPENAI)
async def image_variations(request: HttpRequest) -> HttpResponseBase:
    return await exchange.serve(
        request, surface=OPENAI, endpoint="image_variations", steps=_variations
    )


async def _edits(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    return await _image_upload(ex, request, "image_edits")


async def _variations(ex: Exchange, request: HttpRequest) -> HttpResponseBase:
    return await _image_upload(ex, request, "image_variations")


async def _image_upload(ex: Exchange, request: HttpRequest, operation: str) -> HttpResponseBase:
    """An edit (image(s), optional mask, prompt) or a variation (one image): billed per image
    returned, like generations."""
    fields, files = _form(request, ("image",), ("mask",))
    ex.body = dict(fields)
    await exchange.resolve(ex, kind="image")
    if operation == "image_edits":
        wanted = media.image_edit_count(fields, files["image"], files.get("mask"))
        input_tokens = tokens.count_text(fields["prompt"])
    else:
        wanted = media.image_variation_count(fields, files["image"])
        input_tokens = 1
    overrides = {}
    if not fields.get("response_format"):
        # As generations: url unless asked otherwise (the docs' examples read data[0].url).
        overrides["response_format"] = "url"
    await exchange.admit(ex, input_tokens=input_tokens, ceiling=0, units=wanted)
    build = _multipart_builder(ex, request, operation, files, overrides)
    opened = await exchange.open_upstream(ex, operation, build=build, protocol=OPENAI)
    data = exchange.upstream_json(opened)
    produced = data.get("data")
    ex.units = min(len(produced), wanted) if isinstance(produced, list) else 0
    ex.ttft_ms = ex.elapsed_ms()
    return exchange.reply_json(ex, data)
