"""Batch endpoints: the OpenAI Files and Batches APIs (/openai/v1/files, /openai/v1/batches, also
at /v1/) and Anthropic Message Batches (/anthropic/v1/messages/batches, also at /v1/). Each view
authenticates, parses, calls gateway.batches and shapes the answer; errors use the surface's
envelope."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from gateway import batches, errors
from gateway.errors import ANTHROPIC, OPENAI
from gateway.models import Batch, BatchFile
from gateway.views.common import endpoint, fresh_caller, reply_json


def _ts(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at else None


def _rfc3339(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else None


def _limit(request: HttpRequest, default: int = 20) -> int:
    raw = request.GET.get("limit", "")
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise errors.BadRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    return int(raw)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.")
    return body


# --- OpenAI: files -------------------------------------------------------------------------------


def openai_file(file: BatchFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": _ts(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }


@endpoint(OPENAI, methods=("GET", "POST"))
async def files(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "GET":
        found, has_more = await sync_to_async(batches.list_files)(
            account_id=caller.account_id,
            purpose=request.GET.get("purpose", ""),
            after=request.GET.get("after", ""),
            limit=_limit(request, 100),
        )
        data = [openai_file(f) for f in found]
        page = {
            "object": "list",
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return reply_json(page, OPENAI)
    try:
        upload = request.FILES.get("file")
    except (MultiPartParserError, RequestDataTooBig) as exc:
        raise errors.BadRequest(
            f"The upload is not a well-formed multipart form: {exc}", param="file"
        ) from exc
    if upload is None:
        raise errors.BadRequest("Send the JSONL file as the multipart field 'file'.", param="file")
    purpose = request.POST.get("purpose", "")
    data = upload.read()
    file = await sync_to_async(batches.create_file)(
        account_id=caller.account_id, filename=upload.name or "", data=data, purpose=purpose
    )
    return reply_json(openai_file(file), OPENAI)


@endpoint(OPENAI, methods=("GET", "DELETE"))
async def file_detail(request: HttpRequest, file_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "DELETE":
        await sync_to_async(batches.delete_file)(account_id=caller.account_id, file_id=file_id)
        return reply_json({"id": file_id, "object": "file", "deleted": True}, OPENAI)
    file = await sync_to_async(batches.get_file)(account_id=caller.account_id, file_id=file_id)
    return reply_json(openai_file(file), OPENAI)


@endpoint(OPENAI, methods=("GET",))
async def file_content(request: HttpRequest, file_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    file = await sync_to_async(batches.get_file)(account_id=caller.account_id, file_id=file_id)
    data = await sync_to_async(batches.read_file)(file)
    return HttpResponse(data, content_type="application/jsonl")


# --- OpenAI: batches -----------------------------------------------------------------------------


def openai_batch(batch: Batch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batches.COMPLETION_WINDOW,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": _ts(batch.created_at),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(batch.completed_at),
        "failed_at": _ts(batch.failed_at),
        "expired_at": _ts(batch.expired_at),
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(batch.cancelled_at),
        "request_counts": {
            "total": batch.total_count,
            "completed": batch.completed_count,
            "failed": batch.failed_count + batch.cancelled_count + batch.expired_count,
        },
        "metadata": batch.metadata,
    }


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise errors.BadRequest(
            "'metadata' must be an object of at most 16 pairs.", param="metadata"
        )
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise errors.BadRequest(
                "'metadata' keys are strings up to 64 characters, values strings up to 512.",
                param="metadata",
            )
    return value


async def _loaded(caller_account: int, batch_id: str, surface: str) -> Batch:
    batch = await sync_to_async(batches.get_batch)(
        account_id=caller_account, batch_id=batch_id, surface=surface
    )
    await sync_to_async(batches.nudge)(batch)
    return batch


@endpoint(OPENAI, methods=("GET", "POST"))
async def openai_batches(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "GET":
        found, has_more = await sync_to_async(batches.list_batches)(
            account_id=caller.account_id,
            surface=OPENAI,
            after=request.GET.get("after", ""),
            limit=_limit(request),
        )
        data = [openai_batch(b) for b in found]
        page = {
            "object": "list",
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return reply_json(page, OPENAI)
    body = _json_body(request)
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise errors.BadRequest(f"'{name}' is required and must be a string.", param=name)
    batch = await sync_to_async(batches.create_openai_batch)(
        caller=caller,
        input_file_id=body["input_file_id"],
        endpoint=body["endpoint"],
        completion_window=body["completion_window"],
        metadata=_metadata(body.get("metadata")),
    )
    return reply_json(openai_batch(batch), OPENAI)


@endpoint(OPENAI, methods=("GET",))
async def openai_batch_detail(request: HttpRequest, batch_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    return reply_json(openai_batch(await _loaded(caller.account_id, batch_id, OPENAI)), OPENAI)


@endpoint(OPENAI, methods=("POST",))
async def openai_batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    batch = await _loaded(caller.account_id, batch_id, OPENAI)
    return reply_json(openai_batch(await sync_to_async(batches.cancel)(batch)), OPENAI)


# --- Anthropic: message batches ------------------------------------------------------------------

_PROCESSING = {
    Batch.Status.VALIDATING: "in_progress",
    Batch.Status.IN_PROGRESS: "in_progress",
    Batch.Status.FINALIZING: "in_progress",
    Batch.Status.CANCELLING: "canceling",
}


def anthropic_batch(batch: Batch, request: HttpRequest) -> dict[str, Any]:
    status = _PROCESSING.get(Batch.Status(batch.status), "ended")
    ended = status == "ended"
    results_url = None
    if ended:
        prefix = "/anthropic" if request.path.startswith("/anthropic/") else ""
        results_url = request.build_absolute_uri(f"{prefix}/v1/messages/batches/{batch.id}/results")
    finished = batch.completed_count + batch.failed_count
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": batch.total_count - finished - batch.cancelled_count - batch.expired_count
            if not ended
            else 0,
            "succeeded": batch.completed_count,
            "errored": batch.failed_count,
            "canceled": batch.cancelled_count,
            "expired": batch.expired_count,
        },
        "created_at": _rfc3339(batch.created_at),
        "expires_at": _rfc3339(batch.expires_at),
        "ended_at": _rfc3339(batch.completed_at or batch.cancelled_at or batch.expired_at),
        "cancel_initiated_at": _rfc3339(batch.cancelling_at),
        "archived_at": None,
        "results_url": results_url,
    }


@endpoint(ANTHROPIC, methods=("GET", "POST"))
async def message_batches(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "GET":
        found, has_more = await sync_to_async(batches.list_batches)(
            account_id=caller.account_id,
            surface=ANTHROPIC,
            after=request.GET.get("after_id", ""),
            before=request.GET.get("before_id", ""),
            limit=_limit(request),
        )
        data = [anthropic_batch(b, request) for b in found]
        page = {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return reply_json(page, ANTHROPIC)
    body = _json_body(request)
    batch = await sync_to_async(batches.create_anthropic_batch)(
        caller=caller, requests=body.get("requests")
    )
    return reply_json(anthropic_batch(batch, request), ANTHROPIC)


@endpoint(ANTHROPIC, methods=("GET", "DELETE"))
async def message_batch_detail(request: HttpRequest, batch_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    batch = await _loaded(caller.account_id, batch_id, ANTHROPIC)
    if request.method == "DELETE":
        await sync_to_async(batches.delete_batch)(batch)
        return reply_json({"id": batch_id, "type": "message_batch_deleted"}, ANTHROPIC)
    return reply_json(anthropic_batch(batch, request), ANTHROPIC)


@endpoint(ANTHROPIC, methods=("POST",))
async def message_batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    batch = await _loaded(caller.account_id, batch_id, ANTHROPIC)
    batch = await sync_to_async(batches.cancel)(batch)
    return reply_json(anthropic_batch(batch, request), ANTHROPIC)


@endpoint(ANTHROPIC, methods=("GET",))
async def message_batch_results(request: HttpRequest, batch_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    batch = await _loaded(caller.account_id, batch_id, ANTHROPIC)
    if batch.output_file_id is None or batch.status in batches.ACTIVE:
        raise errors.NotFound(
            f"Batch {batch_id} has not ended yet; its results are available once "
            "processing_status is 'ended'."
        )
    file = await sync_to_async(BatchFile.objects.get)(pk=batch.output_file_id)
    data = await sync_to_async(batches.read_file)(file)
    return HttpResponse(data, content_type="application/x-jsonl")
