"""The dashboard's batches page: the account's batches with progress and their result files."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.services import account_for
from gateway import batches
from gateway.errors import ANTHROPIC
from gateway.models import Batch, BatchFile


@dataclass(frozen=True)
class Row:
    batch: Batch
    surface_label: str
    done: int
    percent: int
    is_active: bool


def _row(batch: Batch) -> Row:
    done = batch.completed_count + batch.failed_count + batch.cancelled_count + batch.expired_count
    percent = 100 * done // batch.total_count if batch.total_count else 0
    return Row(
        batch=batch,
        surface_label="Anthropic" if batch.surface == ANTHROPIC else "OpenAI",
        done=done,
        percent=percent,
        is_active=batch.status in batches.ACTIVE,
    )


@login_required
def batches_page(request: HttpRequest) -> HttpResponse:
    account = account_for(request.user)  # type: ignore[arg-type]
    rows = [_row(b) for b in Batch.objects.filter(account=account).order_by("-created_at")[:100]]
    context = {"rows": rows, "any_active": any(r.is_active for r in rows)}
    return render(request, "gateway/batches.html", context)


@login_required
def download(request: HttpRequest, file_id: str) -> FileResponse:
    account = account_for(request.user)  # type: ignore[arg-type]
    file = (
        BatchFile.objects.filter(pk=file_id, account=account, deleted=False)
        .exclude(purpose=BatchFile.Purpose.FILES_API)
        .first()
    )
    if file is None:
        raise Http404("No such file.")
    handle = default_storage.open(file.storage_name, "rb")
    return FileResponse(
        handle, as_attachment=True, filename=file.filename, content_type="application/jsonl"
    )
