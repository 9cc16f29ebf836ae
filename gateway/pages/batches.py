"""The dashboard's batches page: the account's batches with progress and their result files."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import orgs
from accounts.orgs import requires
from accounts.roles import Perm
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


@requires(Perm.USAGE_OWN)
def batches_page(request: HttpRequest) -> HttpResponse:
    membership = orgs.current_membership(request)
    found = Batch.objects.filter(account=membership.account)
    key_ids = orgs.usage_key_ids(membership)
    if key_ids is not None:
        found = found.filter(api_key_id__in=key_ids)
    rows = [_row(b) for b in found.order_by("-created_at")[:100]]
    context = {"rows": rows, "any_active": any(r.is_active for r in rows)}
    return render(request, "gateway/batches.html", context)


@requires(Perm.USAGE_OWN)
def download(request: HttpRequest, file_id: str) -> FileResponse:
    membership = orgs.current_membership(request)
    account = membership.account
    key_ids = orgs.usage_key_ids(membership)
    if (
        key_ids is not None
        and not Batch.objects.filter(
            Q(input_file_id=file_id) | Q(output_file_id=file_id) | Q(error_file_id=file_id),
            account=account,
            api_key_id__in=key_ids,
        ).exists()
    ):
        raise Http404("No such file.")
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
