"""The Anthropic Files API (/anthropic/v1/files): upload, list, metadata, delete, and what a
message's ``{"source": {"type": "file", "file_id": ...}}`` block becomes before any upstream
sees it (the file's content inline: base64 for PDFs and images, text for plain-text documents).

Files are per account and share the batch files' table and storage (``gateway/batches/files.py``)
with purpose ``files_api``; this module reads the storage itself, so batch lines may use it. As on
Anthropic's API, uploaded files are not downloadable (only files a tool creates are, and the
gateway runs no tools). Synchronous: views call these through ``sync_to_async``.
"""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Q, QuerySet
from django.utils.timezone import now

from gateway import errors
from gateway.models import BatchFile

MAX_FILE_BYTES = 500 * 1024 * 1024  # Anthropic's limit per file
EXPIRES_MIN_SECONDS = 3600
EXPIRES_MAX_SECONDS = 7_776_000  # ninety days
MAX_LIST_IDS = 100
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_ID_ALPHABET = string.ascii_letters + string.digits
_MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _new_id() -> str:
    return "file_011" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


def sniff_mime(filename: str, data: bytes) -> str:
    """The file's type by its own bytes first, then its name; UTF-8 text is text/plain."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    guessed, _ = mimetypes.guess_type(filename)
    if guessed and not guessed.startswith("image/") and guessed != "application/pdf":
        return guessed
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def upload(
    *, account_id: int, filename: str, data: bytes, expires_in_seconds: str | None = None
) -> BatchFile:
    limit = int(getattr(settings, "FILES_API_MAX_FILE_BYTES", MAX_FILE_BYTES))
    if len(data) > limit:
        raise errors.PayloadTooLarge(
            f"The file is {len(data):,} bytes; a file may hold at most {limit:,}."
        )
    if not data:
        raise errors.BadRequest("The uploaded file is empty.", param="file")
    expires_at = None
    if expires_in_seconds is not None and expires_in_seconds != "":
        seconds = int(expires_in_seconds) if expires_in_seconds.isdigit() else -1
        if not EXPIRES_MIN_SECONDS <= seconds <= EXPIRES_MAX_SECONDS:
            raise errors.BadRequest(
                f"'expires_in_seconds' must be an integer from {EXPIRES_MIN_SECONDS} to "
                f"{EXPIRES_MAX_SECONDS}.",
                param="expires_in_seconds",
            )
        expires_at = now() + timedelta(seconds=seconds)
    mime = sniff_mime(filename, data)
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if not name:
        name = "unnamed" + (mimetypes.guess_extension(mime) or "")
    file_id = _new_id()
    storage_name = default_storage.save(f"files/{account_id}/{file_id}", ContentFile(data))
    return BatchFile.objects.create(
        id=file_id,
        account_id=account_id,
        purpose=BatchFile.Purpose.FILES_API,
        filename=name[:255],
        bytes=len(data),
        storage_name=storage_name,
        created_at=now(),
        mime_type=mime,
        expires_at=expires_at,
    )


def _visible(account_id: int) -> QuerySet[BatchFile]:
    return BatchFile.objects.filter(
        account_id=account_id, purpose=BatchFile.Purpose.FILES_API, deleted=False
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now()))


def get(*, account_id: int, file_id: str) -> BatchFile:
    found = _visible(account_id).filter(pk=file_id).first() if "\x00" not in file_id else None
    if found is None:
        raise errors.NotFound(f"File not found: {file_id[:80]}", param="file_id")
    return found


def delete(*, account_id: int, file_id: str) -> None:
    file = get(account_id=account_id, file_id=file_id)
    file.deleted = True
    file.save(update_fields=["deleted"])
    with contextlib.suppress(OSError):
        default_storage.delete(file.storage_name)


def content(*, account_id: int, file_id: str) -> tuple[BatchFile, bytes]:
    """A downloadable file's bytes. Uploaded files are not downloadable (Anthropic's rule: only
    files a tool creates are, and the gateway runs no tools), so this refuses them with a 400."""
    file = get(account_id=account_id, file_id=file_id)
    if not downloadable(file):
        raise errors.BadRequest(
            f"File {file_id} is not downloadable: as on Anthropic's API, only files created by "
            "a tool can be downloaded, not uploaded ones.",
            param="file_id",
        )
    return file, read(file)


def read(file: BatchFile) -> bytes:
    with default_storage.open(file.storage_name, "rb") as handle:
        data: bytes = handle.read()
    return data


def downloadable(file: BatchFile) -> bool:
    return file.purpose != BatchFile.Purpose.FILES_API


def page(
    *,
    account_id: int,
    limit: int = 20,
    before_id: str = "",
    after_id: str = "",
    ids: list[str] | None = None,
) -> tuple[list[BatchFile], bool]:
    """Newest first. ``after_id``: the page after that file; ``before_id``: the page before it
    (nearest to it); ``ids``: exactly those files, one page."""
    rows = _visible(account_id).order_by("-created_at", "-id")
    if ids is not None:
        if len(set(ids)) > MAX_LIST_IDS:
            raise errors.BadRequest(f"'ids' takes at most {MAX_LIST_IDS} ids.", param="ids")
        return list(rows.filter(pk__in=[i for i in ids if "\x00" not in i])), False
    if after_id:
        rows = rows.filter(_older_than(get(account_id=account_id, file_id=after_id)))
    if before_id:
        cursor = get(account_id=account_id, file_id=before_id)
        newer = list(
            _visible(account_id)
            .filter(
                Q(created_at__gt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__gt=cursor.id)
            )
            .order_by("created_at", "id")[: limit + 1]
        )
        return list(reversed(newer[:limit])), len(newer) > limit
    found = list(rows[: limit + 1])
    return found[:limit], len(found) > limit


def _older_than(cursor: BatchFile) -> Q:
    return Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)


def _rfc3339(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else None


def metadata(file: BatchFile) -> dict[str, Any]:
    return {
        "type": "file",
        "id": file.id,
        "filename": file.filename,
        "mime_type": file.mime_type,
        "size_bytes": file.bytes,
        "created_at": _rfc3339(file.created_at),
        "expires_at": _rfc3339(file.expires_at),
        "downloadable": downloadable(file),
    }


# --- file blocks in messages ------------------------------------------------------------------


def inline_files(body: dict[str, Any], *, account_id: int) -> dict[str, Any]:
    """``body`` with every file-source block of its messages replaced by the file's content
    (the caller's own files only); a 400 naming the block for a missing file or a type that
    cannot be sent."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    cache: dict[str, tuple[BatchFile, bytes]] = {}
    out = []
    for i, message in enumerate(messages):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            where = f"messages[{i}].content"
            blocks = _blocks(message["content"], where, account_id, cache)
            message = {**message, "content": blocks}
        out.append(message)
    return {**body, "messages": out}


def _blocks(
    blocks: list[Any],
    where: str,
    account_id: int,
    cache: dict[str, tuple[BatchFile, bytes]],
) -> list[Any]:
    out = []
    for j, block in enumerate(blocks):
        here = f"{where}[{j}]"
        if isinstance(block, dict):
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "file":
                block = _inline(block, source.get("file_id"), here, account_id, cache)
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                inner = _blocks(block["content"], f"{here}.content", account_id, cache)
                block = {**block, "content": inner}
        out.append(block)
    return out


def _inline(
    block: dict[str, Any],
    file_id: Any,
    where: str,
    account_id: int,
    cache: dict[str, tuple[BatchFile, bytes]],
) -> dict[str, Any]:
    param = f"{where}.source.file_id"
    if not isinstance(file_id, str) or not file_id:
        raise errors.BadRequest(f"{param}: a file source needs a 'file_id'.", param=param)
    if file_id not in cache:
        try:
            file = get(account_id=account_id, file_id=file_id)
        except errors.NotFound:
            raise errors.BadRequest(
                f"{param}: file not found: {file_id[:80]} (upload it with POST /v1/files).",
                param=param,
            ) from None
        cache[file_id] = (file, read(file))
    file, data = cache[file_id]
    kind = block.get("type")
    mime = file.mime_type
    as_base64 = (kind == "image" and mime in IMAGE_TYPES) or (
        kind == "document" and mime == "application/pdf"
    )
    if as_base64:
        source = {"type": "base64", "media_type": mime, "data": base64.b64encode(data).decode()}
    elif kind == "document" and mime.startswith("text/"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.BadRequest(
                f"{param}: {file.filename} is not UTF-8 text.", param=param
            ) from None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        raise errors.BadRequest(
            f"{param}: {file.filename} ({mime}) cannot be sent in a '{kind}' block. Images "
            "(JPEG, PNG, GIF, WebP) go in image blocks; PDF and plain-text files in document "
            "blocks.",
            param=param,
        )
    return {**block, "source": source}
