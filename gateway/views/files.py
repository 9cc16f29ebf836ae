"""The Anthropic Files API (/anthropic/v1/files, also at /v1/files for a caller that sends
``anthropic-version``): upload, list, metadata, content, delete. Each view authenticates, parses,
calls ``gateway/files_api.py`` and shapes the answer in the Anthropic envelope. The
``anthropic-beta: files-api-2025-04-14`` header is accepted and not required (the current SDK no
longer sends it)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from gateway import errors, files_api
from gateway.errors import ANTHROPIC
from gateway.views.common import endpoint, fresh_caller, reply_json


def _limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit", "")
    if not raw:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise errors.BadRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    return int(raw)


@endpoint(ANTHROPIC, methods=("GET", "POST"))
async def files(request: HttpRequest) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "GET":
        ids = request.GET.getlist("ids") or request.GET.getlist("ids[]") or None
        after = request.GET.get("after_id", "")
        cursor = request.GET.get("page", "")
        if cursor:
            if not cursor.startswith("page_"):
                raise errors.BadRequest("'page' must be a cursor from 'next_page'.", param="page")
            after = cursor.removeprefix("page_")
        found, has_more = await sync_to_async(files_api.page)(
            account_id=caller.account_id,
            limit=_limit(request),
            before_id=request.GET.get("before_id", ""),
            after_id=after,
            ids=ids,
        )
        forward = has_more and not request.GET.get("before_id")
        return reply_json(
            {
                "data": [files_api.metadata(f) for f in found],
                "has_more": has_more,
                "first_id": found[0].id if found else None,
                "last_id": found[-1].id if found else None,
                "next_page": f"page_{found[-1].id}" if forward and found else None,
            },
            ANTHROPIC,
        )
    try:
        upload = request.FILES.get("file")
        expires = request.POST.get("expires_in_seconds")
    except (MultiPartParserError, RequestDataTooBig) as exc:
        raise errors.BadRequest(
            f"The upload is not a well-formed multipart form: {exc}", param="file"
        ) from exc
    if upload is None:
        raise errors.BadRequest("Send the file as the multipart field 'file'.", param="file")
    file = await sync_to_async(files_api.upload)(
        account_id=caller.account_id,
        filename=upload.name or "",
        data=upload.read(),
        expires_in_seconds=expires,
    )
    return reply_json(files_api.metadata(file), ANTHROPIC)


@endpoint(ANTHROPIC, methods=("GET", "DELETE"))
async def file_detail(request: HttpRequest, file_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    if request.method == "DELETE":
        await sync_to_async(files_api.delete)(account_id=caller.account_id, file_id=file_id)
        return reply_json({"id": file_id, "type": "file_deleted"}, ANTHROPIC)
    file = await sync_to_async(files_api.get)(account_id=caller.account_id, file_id=file_id)
    return reply_json(files_api.metadata(file), ANTHROPIC)


@endpoint(ANTHROPIC, methods=("GET",))
async def file_content(request: HttpRequest, file_id: str) -> HttpResponseBase:
    caller = await fresh_caller(request)
    file, data = await sync_to_async(files_api.content)(
        account_id=caller.account_id, file_id=file_id
    )
    return HttpResponse(data, content_type=file.mime_type or "application/octet-stream")
