"""The batch runner: one at a time per batch (a lease on the ``Batch`` row, renewed by a
heartbeat), it claims pending lines and runs up to ``BATCH_CONCURRENCY`` of them at once, each
through the request pipeline (gateway/exchange.py) like a live request, and commits each line's
result, usage record and ledger charge in one transaction.

So after a worker dies, the next runner re-runs exactly the lines whose result was never
committed, and no line is billed twice: a line with a committed result is never claimed again,
and the usage record and charge are idempotent on the request id anyway. Lines cost
``BATCH_PRICE_PERCENT`` of the live price, skip the RPM count and wait out a full TPM minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import Count, F, Q
from django.utils.timezone import now

from accounts.models import ApiKey
from gateway import auth, errors, exchange, limits, media, metering, tokens
from gateway.auth import Caller
from gateway.batches import output, parsing
from gateway.errors import OPENAI, GatewayError
from gateway.exchange import Exchange
from gateway.models import Batch, BatchLine
from gateway.providers.base import close_http_client

logger = logging.getLogger("tokenfactory.batches")

BATCH_PRICE_PERCENT = 50
ACTIVE = (
    Batch.Status.VALIDATING,
    Batch.Status.IN_PROGRESS,
    Batch.Status.FINALIZING,
    Batch.Status.CANCELLING,
)


def concurrency() -> int:
    return max(1, int(getattr(settings, "BATCH_CONCURRENCY", 8)))


def lease() -> timedelta:
    return timedelta(seconds=max(2, int(getattr(settings, "BATCH_LEASE_SECONDS", 30))))


def _db[**P, T](fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    return sync_to_async(fn, thread_sensitive=True)


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
        self.endpoint = parsing.CHAT_ENDPOINT
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
        every = lease().total_seconds() / 3
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
        return auth.caller_for(key, await auth.key_version(key.key_hash))

    async def _run_lines(self) -> None:
        limit = concurrency()
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
        ex = Exchange(
            surface=self.surface,
            endpoint="embeddings" if self.endpoint == parsing.EMBEDDINGS_ENDPOINT else "chat",
            request_id=line.request_id,
            caller=self.caller,
            body=line.body if isinstance(line.body, dict) else {},
            forwarded={"x-request-id": line.request_id},
            batch_id=self.batch_id,
            price_factor_percent=BATCH_PRICE_PERCENT,
            counts_rpm=False,
            reload_caller=self._reload_caller,
        )

        async def commit(outcome: _Outcome, record: metering.UsageRecord) -> None:
            await _db(_finish_line)(line.pk, self.me, self.batch_id, outcome, record)

        await exchange.run(ex, self._execute, line, on_error=_failure, commit=commit)

    async def _execute(self, ex: Exchange, line: _Claimed) -> _Outcome:
        if line.error is not None:
            ex.status, ex.error_code = line.error["status"], line.error["code"]
            return _Outcome(BatchLine.Status.FAILED, line.error["status"], None, line.error)
        if self.caller is None:
            raise errors.Unauthorized("The API key that created this batch is revoked or expired.")
        body = ex.body
        if body.get("stream"):
            raise errors.BadRequest(
                "Batch requests cannot stream; remove 'stream'.", param="stream"
            )
        if ex.endpoint == "embeddings":
            await exchange.resolve(ex, kind="embedding")
            items = media.embedding_inputs(body)
            media.check_embedding_options(body)
            counted = media.embedding_tokens(items)
            await exchange.admit(ex, input_tokens=counted, ceiling=0, on_full=self._wait)
            data = await exchange.embed(ex, counted_tokens=counted)
            return _Outcome(BatchLine.Status.SUCCEEDED, 200, data)
        model = await exchange.resolve(ex, kind="chat")
        shape = exchange.check_chat(body, self.surface)
        await exchange.admit(
            ex,
            input_tokens=tokens.measure_input_now(body),
            ceiling=exchange.output_ceiling(model, shape),
            requested=exchange.requested_output(model, shape),
            on_full=self._wait,
        )
        return _Outcome(BatchLine.Status.SUCCEEDED, 200, await exchange.complete_chat(ex))

    async def _reload_caller(self) -> Caller | None:
        self.caller = await self._load_caller()
        return self.caller

    async def _wait(self, refused: limits.Refused) -> None:
        """A full RPM/TPM minute is waited out (a batch has hours), unless the batch ends."""
        state = await _db(_state)(self.batch_id)
        if self.lost or state is None or state[0] == Batch.Status.CANCELLING:
            raise errors.BadRequest("The batch was cancelled.", code="batch_cancelled")
        await asyncio.sleep(min(max(refused.retry_after, 1), 5))


def _failure(ex: Exchange, err: GatewayError) -> _Outcome:
    return _Outcome(BatchLine.Status.FAILED, err.status, None, errors.line_error(err))


# --- the runner's database steps (sync; each one short) -------------------------------------------


def _take_lease(batch_id: str, me: str) -> Batch | None:
    at = now()
    with transaction.atomic():
        free = Q(runner="") | Q(runner=me) | Q(heartbeat_at__isnull=True)
        free |= Q(heartbeat_at__lt=at - lease())
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
    output.write_files(batch, rows)
    batch.status = final
    stamp = {
        Batch.Status.COMPLETED: "completed_at",
        Batch.Status.CANCELLED: "cancelled_at",
        Batch.Status.EXPIRED: "expired_at",
    }[final]
    setattr(batch, stamp, now())
    batch.save(update_fields=["output_file", "error_file", "status", stamp])
