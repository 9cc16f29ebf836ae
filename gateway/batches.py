"""Batches of either surface: files in, lines run in the background through the same routing and
provider code as live traffic, results out.

A batch is stored as one ``BatchLine`` row per request, with its ``request_id`` fixed at creation.
One runner at a time drives a batch (a lease on the ``Batch`` row, renewed by a heartbeat); it
claims pending lines, runs up to ``BATCH_CONCURRENCY`` of them at once on an asyncio loop, and
commits each line's result, its usage record and its ledger charge in one transaction. So after a
worker dies, the next runner re-runs exactly the lines whose result was never committed, and no
line is billed twice: a line with a committed result is never claimed again, and the usage record
and charge are idempotent on the request id anyway.

Lines cost ``BATCH_PRICE_PERCENT`` of the live token price, skip the RPM count, and are charged to
the token window and the balance like live requests (``limits.admit`` with ``counts_rpm=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections, connections, transaction
from django.db.models import Count, F, Q
from django.utils.timezone import now

from accounts.models import ApiKey
from billing import money
from gateway import auth, errors, limits, media, metering, relay, routing, store, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo
from gateway.errors import ANTHROPIC, OPENAI, GatewayError
from gateway.models import Batch, BatchFile, BatchLine
from gateway.providers.base import close_http_client
from gateway.relay import Exchange
from gateway.tokens import Usage

logger = logging.getLogger("tokenfactory.batches")

BATCH_PRICE_PERCENT = 50
CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
MESSAGES_ENDPOINT = "/v1/messages"
OPENAI_ENDPOINTS = (CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT)
COMPLETION_WINDOW = "24h"
WINDOW = timedelta(hours=24)
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_LINES = 50_000
MAX_ANTHROPIC_REQUESTS = 100_000

ACTIVE = (
    Batch.Status.VALIDATING,
    Batch.Status.IN_PROGRESS,
    Batch.Status.FINALIZING,
    Batch.Status.CANCELLING,
)


def _concurrency() -> int:
    return max(1, int(getattr(settings, "BATCH_CONCURRENCY", 8)))


def _lease() -> timedelta:
    return timedelta(seconds=max(2, int(getattr(settings, "BATCH_LEASE_SECONDS", 30))))


def _db[**P, T](fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    return sync_to_async(fn, thread_sensitive=True)


def line_request_id(batch_id: str, index: int) -> str:
    return f"batch_req_{batch_id}_{index}"


def batch_cost_micros(model: ModelInfo, usage: Usage) -> int:
    """A batch line's cost: the live token price times BATCH_PRICE_PERCENT, rounded up."""
    live = money.token_cost_micros(
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens,
        input_price_micros=model.input_price_micros or 0,
        output_price_micros=model.output_price_micros or 0,
        cached_input_price_micros=model.cached_input_price_micros,
    )
    return -(-live * BATCH_PRICE_PERCENT // 100)


# --- files ----------------------------------------------------------------------------------------


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
        BatchFile.objects.filter(pk=file_id, account_id=account_id, deleted=False).first()
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
    rows = BatchFile.objects.filter(account_id=account_id, deleted=False).order_by(
        "-created_at", "-id"
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


def _write_output(batch: Batch, kind: str, lines: Iterable[dict[str, Any]]) -> BatchFile | None:
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


# --- creating, reading, cancelling ----------------------------------------------------------------


def _line_error(
    code: str, message: str, *, status: int = 400, param: str | None = None
) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"status": status, "type": kind, "code": code, "message": message, "param": param}


def _parse_openai_line(
    raw: str, number: int, endpoint: str
) -> tuple[str, Any, dict[str, Any] | None]:
    """(custom_id, body, error) for one input line; a line that cannot run keeps its error."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"Line {number} is not valid JSON: {exc}."
        return "", None, _line_error("invalid_json", message)
    if not isinstance(item, dict):
        return "", None, _line_error("invalid_request", f"Line {number} is not a JSON object.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        message = f"Line {number} has no 'custom_id' string."
        return "", None, _line_error("missing_custom_id", message, param="custom_id")
    url = item.get("url")
    if url != endpoint:
        message = (
            f"Line {number} ('{custom_id}') has url {url!r}, but this batch's endpoint is "
            f"'{endpoint}'; every line must use the batch's endpoint."
        )
        return custom_id, None, _line_error("invalid_url", message, param="url")
    method = item.get("method", "POST")
    if method != "POST":
        message = f"Line {number} ('{custom_id}') has method {method!r}; only POST is supported."
        return custom_id, None, _line_error("invalid_method", message, param="method")
    body = item.get("body")
    if not isinstance(body, dict):
        message = f"Line {number} ('{custom_id}') has no 'body' object."
        return custom_id, None, _line_error("invalid_body", message, param="body")
    return custom_id, body, None


def create_openai_batch(
    *,
    caller: Caller,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, Any] | None,
) -> Batch:
    if endpoint not in OPENAI_ENDPOINTS:
        raise errors.BadRequest(
            f"endpoint '{endpoint}' is not supported for batches; use "
            f"{' or '.join(OPENAI_ENDPOINTS)}.",
            param="endpoint",
        )
    if completion_window != COMPLETION_WINDOW:
        raise errors.BadRequest(
            f"completion_window must be '{COMPLETION_WINDOW}'.", param="completion_window"
        )
    file = get_file(account_id=caller.account_id, file_id=input_file_id)
    if file.purpose != BatchFile.Purpose.BATCH:
        raise errors.BadRequest(
            f"{input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
        )
    text = read_file(file).decode("utf-8")
    batch_id = "batch_" + secrets.token_hex(12)
    lines: list[BatchLine] = []
    seen: set[str] = set()
    number = 0
    for raw in text.splitlines():
        number += 1
        if not raw.strip():
            continue
        custom_id, body, error = _parse_openai_line(raw, number, endpoint)
        if error is None and custom_id in seen:
            message = f"Line {number} repeats custom_id '{custom_id}'; custom_ids must be unique."
            error = _line_error("duplicate_custom_id", message, param="custom_id")
        seen.add(custom_id)
        index = len(lines)
        lines.append(
            BatchLine(
                index=index,
                custom_id=custom_id[:200],
                request_id=line_request_id(batch_id, index),
                body=body,
                error=error,
            )
        )
    return _create(
        caller=caller,
        batch_id=batch_id,
        surface=OPENAI,
        endpoint=endpoint,
        lines=lines,
        input_file=file,
        metadata=metadata,
    )


def create_anthropic_batch(*, caller: Caller, requests: Any) -> Batch:
    if not isinstance(requests, list) or not requests:
        raise errors.BadRequest("'requests' must be a non-empty array.", param="requests")
    if len(requests) > MAX_ANTHROPIC_REQUESTS:
        raise errors.BadRequest(
            f"A batch holds at most {MAX_ANTHROPIC_REQUESTS:,} requests.", param="requests"
        )
    batch_id = "msgbatch_" + secrets.token_hex(12)
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            raise errors.BadRequest(
                f"requests[{index}].custom_id: Field required", param=f"requests[{index}]"
            )
        if custom_id in seen:
            raise errors.BadRequest(
                f"requests[{index}]: custom_id '{custom_id}' is not unique within the batch.",
                param=f"requests[{index}].custom_id",
            )
        seen.add(custom_id)
        params = item.get("params")
        error = None
        if not isinstance(params, dict):
            error = _line_error("invalid_body", f"'{custom_id}': 'params' must be an object.")
            params = None
        lines.append(
            BatchLine(
                index=index,
                custom_id=custom_id[:200],
                request_id=line_request_id(batch_id, index),
                body=params,
                error=error,
            )
        )
    return _create(
        caller=caller,
        batch_id=batch_id,
        surface=ANTHROPIC,
        endpoint=MESSAGES_ENDPOINT,
        lines=lines,
        input_file=None,
        metadata=None,
    )


def _create(
    *,
    caller: Caller,
    batch_id: str,
    surface: str,
    endpoint: str,
    lines: list[BatchLine],
    input_file: BatchFile | None,
    metadata: dict[str, Any] | None,
) -> Batch:
    if not lines:
        raise errors.BadRequest("The batch has no requests.")
    created = now()
    with transaction.atomic():
        batch = Batch.objects.create(
            id=batch_id,
            account_id=caller.account_id,
            api_key_id=caller.key_id,
            surface=surface,
            endpoint=endpoint,
            input_file=input_file,
            status=Batch.Status.VALIDATING,
            total_count=len(lines),
            metadata=metadata,
            created_at=created,
            expires_at=created + WINDOW,
        )
        for line in lines:
            line.batch = batch
        BatchLine.objects.bulk_create(lines, batch_size=1000)
        transaction.on_commit(lambda: start(batch_id))
    return batch


def get_batch(*, account_id: int, batch_id: str, surface: str) -> Batch:
    found = (
        Batch.objects.filter(pk=batch_id, account_id=account_id, surface=surface).first()
        if "\x00" not in batch_id
        else None
    )
    if found is None:
        raise errors.NotFound(f"No such batch: {batch_id}", param="batch_id")
    return found


def list_batches(
    *, account_id: int, surface: str, after: str = "", before: str = "", limit: int = 20
) -> tuple[list[Batch], bool]:
    rows = Batch.objects.filter(account_id=account_id, surface=surface)
    newest_first = rows.order_by("-created_at", "-id")
    if before:
        cursor = rows.filter(pk=before).first()
        if cursor is not None:
            older_first = rows.order_by("created_at", "id").filter(
                Q(created_at__gt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__gt=cursor.id)
            )
            found = list(older_first[: limit + 1])
            return list(reversed(found[:limit])), len(found) > limit
    if after:
        cursor = rows.filter(pk=after).first()
        if cursor is not None:
            newest_first = newest_first.filter(
                Q(created_at__lt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__lt=cursor.id)
            )
    found = list(newest_first[: limit + 1])
    return found[:limit], len(found) > limit


def cancel(batch: Batch) -> Batch:
    """Ask the runner to stop: it takes no new line, lets the ones in flight finish, marks the
    rest cancelled and writes the files. Cancelling a finished batch changes nothing."""
    moved = Batch.objects.filter(pk=batch.pk, status__in=ACTIVE).exclude(
        status=Batch.Status.CANCELLING
    )
    if moved.update(status=Batch.Status.CANCELLING, cancelling_at=now()):
        transaction.on_commit(lambda: start(batch.pk))
    batch.refresh_from_db()
    return batch


def delete_batch(batch: Batch) -> None:
    if batch.status in ACTIVE:
        raise errors.BadRequest(
            f"Batch {batch.pk} is still processing; cancel it and wait for it to end first."
        )
    batch.delete()


def is_stalled(batch: Batch) -> bool:
    if batch.status not in ACTIVE:
        return False
    return batch.heartbeat_at is None or batch.heartbeat_at < now() - _lease()


def nudge(batch: Batch) -> None:
    """Embedded mode has no worker to resume a batch after a restart: reading one does."""
    if settings.CELERY_TASK_ALWAYS_EAGER and is_stalled(batch):
        start(batch.pk)


def stalled_ids() -> list[str]:
    """Active batches no runner is driving: never started, or their runner went silent."""
    cutoff = now() - _lease()
    rows = Batch.objects.filter(status__in=ACTIVE).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff)
    )
    return list(rows.values_list("pk", flat=True))


def overdue_ids() -> list[str]:
    """Active batches past the end of their window (their runner ends them as expired)."""
    return list(
        Batch.objects.filter(status__in=ACTIVE, expires_at__lte=now()).values_list("pk", flat=True)
    )


def start(batch_id: str) -> None:
    """Hand the batch to a runner. With a broker that is a Celery worker; without one (the
    embedded default, where ``delay`` would run the whole batch inside this request) it is a
    daemon thread of this process."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        threading.Thread(target=run, args=(batch_id,), daemon=True, name=batch_id).start()
        return
    # By name: gateway.tasks imports this module, never the other way round.
    current_app.send_task("gateway.tasks.run_batch", args=[batch_id])


# --- running --------------------------------------------------------------------------------------


def run(batch_id: str) -> None:
    """Drive ``batch_id`` to its end if no other live runner holds it (safe to call twice)."""
    close_old_connections()
    try:
        asyncio.run(_Runner(batch_id).drive())
    finally:
        connections.close_all()


@dataclass
class _Claimed:
    pk: int
    index: int
    custom_id: str
    request_id: str
    body: Any
    error: dict[str, Any] | None


@dataclass
class _Outcome:
    status: str
    status_code: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _Runner:
    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.me = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"[:200]
        self.lost = False
        self.stopping = False
        self.caller: Caller | None = None
        self.surface = OPENAI
        self.endpoint = CHAT_ENDPOINT
        self.key_id: int | None = None

    async def drive(self) -> None:
        batch = await _db(_take_lease)(self.batch_id, self.me)
        if batch is None:
            return
        self.surface, self.endpoint, self.key_id = batch.surface, batch.endpoint, batch.api_key_id
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            self.caller = await self._load_caller()
            await self._run_lines()
            if not self.lost:
                await _db(_finalize)(self.batch_id, self.me)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await _db(_release)(self.batch_id, self.me)
            await close_http_client()
            await _db(connections.close_all)()

    async def _heartbeat(self) -> None:
        every = _lease().total_seconds() / 3
        while not self.lost:
            await asyncio.sleep(every)
            renewed = await _db(_renew)(self.batch_id, self.me)
            if not renewed:
                logger.warning("batch lease lost", extra={"batch_id": self.batch_id})
                self.lost = True

    async def _load_caller(self) -> Caller | None:
        if self.key_id is None:
            return None
        key = await _db(_usable_key)(self.key_id)
        if key is None:
            return None
        version = 0
        redis = store.client()
        if redis is not None:
            value = await redis.get(auth.CHANGE_PREFIX + key.key_hash)
            version = int(value) if value is not None else 0
        return auth.caller_for(key, version)

    async def _run_lines(self) -> None:
        limit = _concurrency()
        running: set[asyncio.Task[None]] = set()
        while not self.lost:
            state = await _db(_state)(self.batch_id)
            if state is None or state[0] == Batch.Status.CANCELLING or state[1] <= now():
                self.stopping = True
                break
            free = limit - len(running)
            claimed = await _db(_claim)(self.batch_id, self.me, free) if free else []
            for line in claimed:
                task = asyncio.create_task(self._run_line(line))
                running.add(task)
                task.add_done_callback(running.discard)
            if not running:
                break
            if not claimed:
                await asyncio.wait(running, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_line(self, line: _Claimed) -> None:
        ex = Exchange(surface=self.surface, request_id=line.request_id)
        ex.endpoint = "embeddings" if self.endpoint == EMBEDDINGS_ENDPOINT else "chat"
        ex.caller = self.caller
        ex.body = line.body if isinstance(line.body, dict) else {}
        ex.forwarded = {"x-request-id": line.request_id}
        try:
            if line.error is not None:
                ex.status, ex.error_code = line.error["status"], line.error["code"]
                outcome = _Outcome(BatchLine.Status.FAILED, line.error["status"], None, line.error)
            else:
                outcome = await self._execute(ex)
        except GatewayError as err:
            outcome = _failure(ex, err)
        except Exception as exc:
            logger.exception("batch line failed", extra={"request_id": line.request_id})
            outcome = _failure(ex, errors.GatewayError(f"The line could not be run: {exc}"))
        cost = 0
        if ex.model is not None and ex.usage is not None and ex.model.is_priced:
            cost = batch_cost_micros(ex.model, ex.usage)
        admission = ex.admission
        billed = cost if admission is not None and admission.paid else 0
        record = relay.usage_record(
            ex, cost_micros=cost, billed_micros=billed, batch_id=self.batch_id
        )
        await _db(_finish_line)(line.pk, self.me, self.batch_id, outcome, record)
        if admission is not None:
            # The record is already in the database; this swaps the live reservation for the use
            # (the record it queues again is a no-op: metering dedupes on the request id).
            usage = ex.usage or Usage()
            await limits.settle(
                admission, tokens=usage.total_tokens, billed_micros=billed, record=record
            )

    async def _execute(self, ex: Exchange) -> _Outcome:
        if self.caller is None:
            raise errors.Unauthorized("The API key that created this batch is revoked or expired.")
        body = ex.body
        if body.get("stream"):
            raise errors.BadRequest(
                "Batch requests cannot stream; remove 'stream'.", param="stream"
            )
        if ex.endpoint == "embeddings":
            ex.model = await relay.resolve_model(body, self.caller, kind="embedding")
            items = media.embedding_inputs(body)
            media.check_embedding_options(body)
            counted = media.embedding_tokens(items)
            await self._admit(ex, counted, 0)
            opened = await routing.open_upstream(
                _openai_only(ex.model), relay.builder(ex, "embeddings"), stream=False
            )
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
            return _Outcome(BatchLine.Status.SUCCEEDED, 200, data)
        ex.model = await relay.resolve_model(body, self.caller, kind="chat")
        _, max_tokens = relay.check_chat(body, self.surface)
        ceiling = min(
            max_tokens or ex.model.max_output_tokens or 4096, ex.model.max_output_tokens or 1 << 30
        )
        await self._admit(ex, tokens.count_request(body), ceiling)
        opened = await routing.open_upstream(ex.model, relay.builder(ex, "chat"), stream=False)
        ex.route = opened.route
        out = relay.answer(ex, relay.upstream_json(opened.response.content), opened.route.protocol)
        return _Outcome(BatchLine.Status.SUCCEEDED, 200, out)

    async def _admit(self, ex: Exchange, input_tokens: int, ceiling: int) -> None:
        """Admit without the RPM count; a full TPM minute is waited out (a batch has hours), while
        an empty window and balance fail the line as it would fail a live request."""
        assert ex.caller is not None and ex.model is not None
        for _ in range(1000):
            try:
                ex.admission = await limits.admit(
                    ex.caller,
                    ex.model,
                    input_tokens=input_tokens,
                    max_output_tokens=ceiling,
                    request_id=ex.request_id,
                    counts_rpm=False,
                    price_factor_percent=BATCH_PRICE_PERCENT,
                )
                return
            except limits.Stale:
                self.caller = await self._load_caller()
                if self.caller is None:
                    raise errors.Unauthorized(
                        "The API key that created this batch is revoked or expired."
                    ) from None
                ex.caller = self.caller
                ex.model = await relay.resolve_model(ex.body, self.caller, kind=ex.model.kind)
            except limits.Refused as refused:
                if refused.reason not in ("tpm", "rpm"):
                    raise relay.refusal_error(refused, ex) from None
                state = await _db(_state)(self.batch_id)
                if self.lost or state is None or state[0] == Batch.Status.CANCELLING:
                    raise errors.BadRequest(
                        "The batch was cancelled.", code="batch_cancelled"
                    ) from None
                await asyncio.sleep(min(max(refused.retry_after, 1), 5))
        raise errors.RateLimited("The key's token rate limit stayed full.", retry_after=60)


def _openai_only(model: ModelInfo) -> ModelInfo:
    import dataclasses

    routes = tuple(r for r in model.routes if r.protocol == OPENAI)
    if not routes:
        raise errors.ModelUnavailable(
            f"{model.model_id} has no OpenAI-compatible upstream route for embeddings.",
            param="model",
        )
    return dataclasses.replace(model, routes=routes)


def _failure(ex: Exchange, err: GatewayError) -> _Outcome:
    ex.status = err.status
    ex.error_code = err.code or err.type
    ex.usage = None
    error = {
        "status": err.status,
        "type": err.type,
        "code": err.code,
        "message": err.message,
        "param": err.param,
    }
    return _Outcome(BatchLine.Status.FAILED, err.status, None, error)


# --- the runner's database steps (sync; each one short) -------------------------------------------


def _take_lease(batch_id: str, me: str) -> Batch | None:
    at = now()
    with transaction.atomic():
        free = Q(runner="") | Q(runner=me) | Q(heartbeat_at__isnull=True)
        free |= Q(heartbeat_at__lt=at - _lease())
        taken = (
            Batch.objects.filter(pk=batch_id, status__in=ACTIVE)
            .filter(free)
            .update(runner=me, heartbeat_at=at)
        )
        if not taken:
            return None
        Batch.objects.filter(pk=batch_id, status=Batch.Status.VALIDATING).update(
            status=Batch.Status.IN_PROGRESS, in_progress_at=at
        )
        # Lines a dead runner claimed but never finished: their results were never committed (a
        # result, its usage record and its charge commit together), so they run again.
        BatchLine.objects.filter(batch_id=batch_id, status=BatchLine.Status.RUNNING).update(
            status=BatchLine.Status.PENDING, runner="", claimed_at=None
        )
    return Batch.objects.get(pk=batch_id)


def _renew(batch_id: str, me: str) -> bool:
    return bool(Batch.objects.filter(pk=batch_id, runner=me).update(heartbeat_at=now()))


def _release(batch_id: str, me: str) -> None:
    Batch.objects.filter(pk=batch_id, runner=me).update(runner="")


def _usable_key(key_id: int) -> ApiKey | None:
    key = ApiKey.objects.select_related("account__plan").filter(pk=key_id).first()
    if key is None or not key.is_usable or not key.account.is_active:
        return None
    return key


def _state(batch_id: str) -> tuple[str, datetime] | None:
    row = Batch.objects.filter(pk=batch_id).values_list("status", "expires_at").first()
    return (str(row[0]), row[1]) if row else None


def _claim(batch_id: str, me: str, limit: int) -> list[_Claimed]:
    with transaction.atomic():
        if not Batch.objects.filter(pk=batch_id, runner=me).exists():
            return []
        rows = list(
            BatchLine.objects.filter(batch_id=batch_id, status=BatchLine.Status.PENDING)
            .order_by("index")
            .values("pk", "index", "custom_id", "request_id", "body", "error")[:limit]
        )
        if not rows:
            return []
        BatchLine.objects.filter(
            pk__in=[r["pk"] for r in rows], status=BatchLine.Status.PENDING
        ).update(status=BatchLine.Status.RUNNING, runner=me, claimed_at=now())
    return [_Claimed(**row) for row in rows]


def _finish_line(
    pk: int, me: str, batch_id: str, outcome: _Outcome, record: metering.UsageRecord
) -> None:
    """The line's result, the batch counts, the usage record and the ledger charge: one commit."""
    with transaction.atomic():
        done = BatchLine.objects.filter(pk=pk, runner=me, status=BatchLine.Status.RUNNING).update(
            status=outcome.status,
            status_code=outcome.status_code,
            result=outcome.result,
            error=outcome.error,
            finished_at=now(),
        )
        if not done:
            return
        counter = (
            "completed_count" if outcome.status == BatchLine.Status.SUCCEEDED else "failed_count"
        )
        Batch.objects.filter(pk=batch_id).update(**{counter: F(counter) + 1})
        if record.account_id:
            metering.flush([record])


def _finalize(batch_id: str, me: str) -> None:
    at = now()
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id, runner=me).first()
        if batch is None or batch.status not in ACTIVE:
            return
        lines = BatchLine.objects.filter(batch_id=batch_id)
        pending = lines.filter(status__in=[BatchLine.Status.PENDING, BatchLine.Status.RUNNING])
        if batch.status == Batch.Status.CANCELLING:
            final = Batch.Status.CANCELLED
            pending.update(status=BatchLine.Status.CANCELLED, finished_at=at)
        elif batch.expires_at <= at:
            final = Batch.Status.EXPIRED
            pending.update(status=BatchLine.Status.EXPIRED, finished_at=at)
        elif pending.exists():
            return
        else:
            final = Batch.Status.COMPLETED
        counts = dict(
            lines.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
        )
        batch.completed_count = counts.get(BatchLine.Status.SUCCEEDED, 0)
        batch.failed_count = counts.get(BatchLine.Status.FAILED, 0)
        batch.cancelled_count = counts.get(BatchLine.Status.CANCELLED, 0)
        batch.expired_count = counts.get(BatchLine.Status.EXPIRED, 0)
        batch.status = Batch.Status.FINALIZING
        batch.finalizing_at = at
        batch.save(
            update_fields=[
                "completed_count",
                "failed_count",
                "cancelled_count",
                "expired_count",
                "status",
                "finalizing_at",
            ]
        )
    rows = list(BatchLine.objects.filter(batch_id=batch_id).order_by("index"))
    if batch.surface == OPENAI:
        batch.output_file = _write_output(
            batch,
            "output",
            (openai_line(r) for r in rows if r.status == BatchLine.Status.SUCCEEDED),
        )
        batch.error_file = _write_output(
            batch, "error", (openai_line(r) for r in rows if r.status != BatchLine.Status.SUCCEEDED)
        )
    else:
        batch.output_file = _write_output(batch, "results", (anthropic_line(r) for r in rows))
    batch.status = final
    stamp = {
        Batch.Status.COMPLETED: "completed_at",
        Batch.Status.CANCELLED: "cancelled_at",
        Batch.Status.EXPIRED: "expired_at",
    }[final]
    setattr(batch, stamp, now())
    batch.save(update_fields=["output_file", "error_file", "status", stamp])


# --- result lines in each surface's format --------------------------------------------------------

_UNRUN = {
    BatchLine.Status.CANCELLED: ("batch_cancelled", "The batch was cancelled before this ran."),
    BatchLine.Status.EXPIRED: ("batch_expired", "The batch expired before this request ran."),
}


def openai_line(line: BatchLine) -> dict[str, Any]:
    out: dict[str, Any] = {"id": line.request_id, "custom_id": line.custom_id or None}
    if line.status == BatchLine.Status.SUCCEEDED:
        out["response"] = {"status_code": 200, "request_id": line.request_id, "body": line.result}
        out["error"] = None
    elif line.status in _UNRUN:
        code, message = _UNRUN[BatchLine.Status(line.status)]
        out["response"] = None
        out["error"] = {"code": code, "message": message}
    else:
        error = line.error or {}
        out["response"] = {
            "status_code": error.get("status") or 500,
            "request_id": line.request_id,
            "body": {
                "error": {
                    "message": error.get("message", "The request failed."),
                    "type": error.get("type", "server_error"),
                    "param": error.get("param"),
                    "code": error.get("code"),
                }
            },
        }
        out["error"] = None
    return out


def anthropic_line(line: BatchLine) -> dict[str, Any]:
    result: dict[str, Any]
    if line.status == BatchLine.Status.SUCCEEDED:
        result = {"type": "succeeded", "message": line.result}
    elif line.status == BatchLine.Status.CANCELLED:
        result = {"type": "canceled"}
    elif line.status == BatchLine.Status.EXPIRED:
        result = {"type": "expired"}
    else:
        error = line.error or {}
        err = errors.GatewayError(
            error.get("message", "The request failed."), status=error.get("status") or 500
        )
        result = {"type": "errored", "error": errors.anthropic_body(err, line.request_id)}
    return {"custom_id": line.custom_id, "result": result}
