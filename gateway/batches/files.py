"""Batch files: input files uploaded with purpose 'batch' and the output files a batch writes,
stored through Django's default storage with one ``BatchFile`` row each. Anthropic Files API
files share the table and the storage (``gateway/files_api.py``) and are invisible here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import secrets
from collections.abc import Iterable
from typing import Any

import orjson
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Q
from django.utils.timezone import now

from gateway import errors
from gateway.models import Batch, BatchFile

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_LINES = 50_000


def create_file(*, account_id: int, filename: str, data: bytes, purpose: str) -> BatchFile:
    if purpose != "batch":
        raise errors.BadRequest(
            f"purpose '{purpose}' is not supported here; upload batch input with purpose 'batch'.",
            param="purpose",
        )
    limit = int(getattr(settings, "BATCH_MAX_FILE_BYTES", MAX_FILE_BYTES))
    if len(data) > limit:
        raise errors.PayloadTooLarge(
            f"The file is {len(data):,} bytes; a batch input file may hold at most {limit:,}."
        )
    if not data.strip():
        raise errors.BadRequest("The file is empty; send one JSON request per line.", param="file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadRequest(f"The file is not UTF-8 text: {exc}.", param="file") from exc
    count = sum(1 for line in text.splitlines() if line.strip())
    if count > MAX_FILE_LINES:
        raise errors.BadRequest(
            f"The file holds {count:,} requests; a batch input file may hold at most "
            f"{MAX_FILE_LINES:,}.",
            param="file",
        )
    file_id = "file-" + secrets.token_hex(12)
    name = default_storage.save(f"batches/{account_id}/{file_id}.jsonl", ContentFile(data))
    return BatchFile.objects.create(
        id=file_id,
        account_id=account_id,
        purpose=BatchFile.Purpose.BATCH,
        filename=(filename or "input.jsonl")[:255],
        bytes=len(data),
        line_count=count,
        storage_name=name,
        created_at=now(),
    )


def get_file(*, account_id: int, file_id: str) -> BatchFile:
    # A NUL cannot be in an id, and PostgreSQL refuses it in a query.
    found = (
        BatchFile.objects.filter(pk=file_id, account_id=account_id, deleted=False)
        .exclude(purpose=BatchFile.Purpose.FILES_API)
        .first()
        if "\x00" not in file_id
        else None
    )
    if found is None:
        raise errors.NotFound(f"No such File object: {file_id}", param="id")
    return found


def read_file(file: BatchFile) -> bytes:
    with default_storage.open(file.storage_name, "rb") as handle:
        data: bytes = handle.read()
    return data


def delete_file(*, account_id: int, file_id: str) -> BatchFile:
    file = get_file(account_id=account_id, file_id=file_id)
    file.deleted = True
    file.save(update_fields=["deleted"])
    with contextlib.suppress(OSError):
        default_storage.delete(file.storage_name)
    return file


def list_files(
    *, account_id: int, purpose: str = "", after: str = "", limit: int = 20
) -> tuple[list[BatchFile], bool]:
    rows = (
        BatchFile.objects.filter(account_id=account_id, deleted=False)
        .exclude(purpose=BatchFile.Purpose.FILES_API)
        .order_by("-created_at", "-id")
    )
    if purpose:
        rows = rows.filter(purpose=purpose)
    if after:
        cursor = rows.filter(pk=after).first()
        if cursor is not None:
            rows = rows.filter(
                Q(created_at__lt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__lt=cursor.id)
            )
    found = list(rows[: limit + 1])
    return found[:limit], len(found) > limit


def write_output(batch: Batch, kind: str, lines: Iterable[dict[str, Any]]) -> BatchFile | None:
    """An output file of ``batch``, with an id derived from the batch, so finishing twice (after
    a crash) rewrites the same file instead of leaving a second one."""
    buffer = io.BytesIO()
    count = 0
    for line in lines:
        buffer.write(orjson.dumps(line))
        buffer.write(b"\n")
        count += 1
    if not count:
        return None
    digest = hashlib.sha256(f"{batch.id}:{kind}".encode()).hexdigest()[:24]
    file_id = f"file-{digest}"
    target = f"batches/{batch.account_id}/{batch.id}_{kind}.jsonl"
    if default_storage.exists(target):
        default_storage.delete(target)
    name = default_storage.save(target, ContentFile(buffer.getvalue()))
    file, _ = BatchFile.objects.update_or_create(
        pk=file_id,
        defaults={
            "account_id": batch.account_id,
            "purpose": BatchFile.Purpose.BATCH_OUTPUT,
            "filename": f"{batch.id}_{kind}.jsonl",
            "bytes": buffer.tell(),
            "line_count": count,
            "storage_name": name,
            "created_at": now(),
            "deleted": False,
        },
    )
    return file
