"""Paths both SDKs reach (/v1/models, /v1/files): told apart by the anthropic-version header,
which only the Anthropic SDK sends."""

from __future__ import annotations

import orjson
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from gateway import errors, store
from gateway.views import anthropic, batches, files, openai
from gateway.views.common import reply_error


def _is_anthropic(request: HttpRequest) -> bool:
    return "anthropic-version" in request.headers


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponseBase:
    view = anthropic.models if _is_anthropic(request) else openai.models
    return await view(request)


@csrf_exempt
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponseBase:
    view = anthropic.model_detail if _is_anthropic(request) else openai.model_detail
    return await view(request, model_id)


@csrf_exempt
async def v1_files(request: HttpRequest) -> HttpResponseBase:
    view = files.files if _is_anthropic(request) else batches.files
    return await view(request)


@csrf_exempt
async def v1_file_detail(request: HttpRequest, file_id: str) -> HttpResponseBase:
    view = files.file_detail if _is_anthropic(request) else batches.file_detail
    return await view(request, file_id)


@csrf_exempt
async def v1_file_content(request: HttpRequest, file_id: str) -> HttpResponseBase:
    view = files.file_content if _is_anthropic(request) else batches.file_content
    return await view(request, file_id)


@csrf_exempt
async def not_found_openai(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    return reply_error(
        errors.NotFound(f"Invalid URL ({request.method} {request.path})"), errors.OPENAI
    )


@csrf_exempt
async def not_found_anthropic(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    return reply_error(
        errors.NotFound(f"Not found: {request.method} {request.path}"), errors.ANTHROPIC
    )


@csrf_exempt
async def not_found_v1(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    anthropic_path = request.path.lstrip("/").startswith("v1/messages")
    if anthropic_path or _is_anthropic(request):
        return await not_found_anthropic(request, rest)
    return await not_found_openai(request, rest)


async def healthz(request: HttpRequest) -> HttpResponseBase:
    """Liveness: the process answers. Cheap enough for a load balancer to poll every second."""
    return HttpResponse(b'{"status":"ok"}', content_type="application/json")


async def readyz(request: HttpRequest) -> HttpResponseBase:
    """Readiness: the database and (when configured) Redis answer."""
    checks: dict[str, str] = {}
    try:
        await sync_to_async(_db_ping)()
        checks["database"] = "ok"
    except DatabaseError as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    redis = store.client()
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except RedisError as exc:
            checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return HttpResponse(
        orjson.dumps({"status": "ok" if ok else "unavailable", "checks": checks}),
        status=200 if ok else 503,
        content_type="application/json",
    )


def _db_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
