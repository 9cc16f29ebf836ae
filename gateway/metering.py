"""Metering: every request ends in exactly one usage record.

The hot path never writes to the database. With Redis, settlement appends the record to the
``tf:usage`` stream in the same script call that settles the limits; a drain (a Celery task, or a
background task of the gateway process when there is no broker) reads the stream through a
consumer group, bulk-inserts the records (unique request ids make a replay a no-op), posts the
balance charges to the ledger (idempotent on the request id) and only then acknowledges the
entries. A drainer that dies leaves its entries pending, and the next one claims them. Without
Redis the records wait in an in-process buffer that a background task flushes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import os
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.dispatch import Signal
from redis.exceptions import RedisError

from accounts.models import Account, ApiKey
from billing import ledger
from gateway import store
from gateway.models import UsageRecord as UsageRow

logger = logging.getLogger("tokenfactory.metering")

STREAM = "tf:usage"
GROUP = "drainers"
_CLAIM_IDLE_MS = 30_000

# Records of these accounts are in the database (``account_ids``): the limiter persists their
# windows, the live meters update. A drain with shared limits starts: the limiter releases what
# dead processes held. Both connected in gateway/apps.py, so metering never calls the limiter.
flushed = Signal()
draining = Signal()

_local: deque[bytes] = deque()
_local_lock = threading.Lock()
_flusher: dict[int, asyncio.Task[None]] = {}


# --- the record -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class UsageRecord:
    """What one request used and cost: the one shape a usage record has from the moment a request
    ends until it is a ``gateway.models.UsageRecord`` row. Money in integer micro-dollars."""

    request_id: str
    account_id: int
    key_id: int | None
    surface: str
    model: str
    status: int
    created_at_ms: int
    endpoint: str = "chat"
    route: str = ""
    error_code: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    is_estimate: bool = False
    # Who counted the tokens: "upstream" (its usage report), "tokenizer:<kind>" (its tokenizer
    # endpoint, for an answer sent without usage), "estimate" (ours); "" when nothing was used.
    counted_by: str = ""
    cost_micros: int = 0  # what the usage costs at the model's prices
    billed_micros: int = 0  # what was taken from the prepaid balance (0 inside the window)
    in_window: bool = True
    latency_ms: int = 0
    ttft_ms: int | None = None
    stream: bool = False
    batch_id: str = ""
    requested_model: str = ""  # the name the client sent, when not the served model's id

    def to_json(self) -> bytes:
        # orjson writes dataclasses natively (its fastest path).
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """A record written by ``to_json`` (by this version or an older one: unknown keys are
        ignored, missing optional ones take their defaults)."""
        data = orjson.loads(raw)
        return cls(**{name: data[name] for name in _FIELD_NAMES if name in data})


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(UsageRecord))


# --- the hot path ---------------------------------------------------------------------------


def enqueue_local(record: bytes) -> None:
    """Embedded mode: keep the record in this process until the background flush.

    Kept as an exact-size copy: orjson returns its output in the buffer it wrote into, about
    8 KB whatever the length, and a few thousand records waiting for a flush behind a saturated
    event loop then held hundreds of megabytes (a 400-byte record took 8,150)."""
    _local.append(bytes(memoryview(record)))
    _ensure_flusher()


async def record_unadmitted(record: UsageRecord) -> None:
    """A request refused before admission (bad model, limits, ...): record it, at no cost."""
    data = record.to_json()
    redis = store.client()
    if redis is None:
        enqueue_local(data)
        return
    try:
        await redis.xadd(STREAM, {"r": data})
    except RedisError:
        # Redis is down: this process writes the record to the database itself.
        enqueue_local(data)
        return
    _ensure_flusher()


def pending_local() -> int:
    """Records settled in this process and not yet handed to the database."""
    return len(_local)


def discard_local() -> None:
    """Forget records buffered in this process (tests start each case from an empty buffer)."""
    with _local_lock:
        _local.clear()


def kick() -> None:
    """Make sure this process drains soon (when it drains at all)."""
    _ensure_flusher()


def _ensure_flusher() -> None:
    # Records buffered here (Redis was down) can only be flushed by this process, even when
    # a worker drains the stream.
    if not settings.METERING_DRAIN_IN_PROCESS and not _local:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = _flusher.get(id(loop))
    if task is None or task.done():
        _flusher[id(loop)] = loop.create_task(_flush_forever())


async def _flush_forever() -> None:
    interval = settings.METERING_FLUSH_INTERVAL_MS / 1000
    idle_rounds = 0
    while idle_rounds < 20:
        await asyncio.sleep(interval)
        work = drain if settings.METERING_DRAIN_IN_PROCESS else _drain_local_only
        try:
            moved = await sync_to_async(work, thread_sensitive=False)()
        except Exception:
            logger.exception("metering flush failed; the records stay queued and are retried")
            moved = 0
        # Keep going while records wait here (the database may be down for a while).
        idle_rounds = 0 if moved or _local else idle_rounds + 1


def _drain_local_only() -> int:
    return _drain_local(500)


# --- draining ------------------------------------------------------------------------------


def drain(max_batches: int = 50, batch_size: int = 500) -> int:
    """Move queued usage records into the database. Safe to run concurrently and repeatedly."""
    total = 0
    total += _drain_local(batch_size)
    redis = store.sync_client()
    if redis is not None:
        # Shared limits: the limiter releases what dead processes left reserved (gateway/apps.py).
        draining.send(sender=None)
        total += _drain_stream(redis, max_batches, batch_size)
    return total


def _drain_local(batch_size: int) -> int:
    moved = 0
    with _local_lock:
        while _local:
            batch = [_local.popleft() for _ in range(min(batch_size, len(_local)))]
            try:
                flush([UsageRecord.from_json(b) for b in batch])
            except Exception:
                # Put them back in order; the next flush tries again.
                _local.extendleft(reversed(batch))
                raise
            moved += len(batch)
    return moved


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def _drain_stream(redis: Any, max_batches: int, batch_size: int) -> int:
    try:
        redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise
    consumer = _consumer()
    moved = 0
    # Entries a dead drainer left unacknowledged come first.
    claimed = redis.xautoclaim(STREAM, GROUP, consumer, _CLAIM_IDLE_MS, "0-0", count=batch_size)
    entries = claimed[1] if claimed else []
    if entries:
        moved += _flush_entries(redis, entries)
    for _ in range(max_batches):
        found = redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch_size)
        if not found:
            break
        entries = found[0][1]
        if not entries:
            break
        moved += _flush_entries(redis, entries)
    return moved


def _flush_entries(redis: Any, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    records = []
    ids = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"r")
        if raw:
            records.append(UsageRecord.from_json(raw))
    flush(records)
    if ids:
        redis.xack(STREAM, GROUP, *ids)
        redis.xdel(STREAM, *ids)
    return len(ids)


def flush(records: Iterable[UsageRecord]) -> int:
    """Write records and their balance charges; replays of the same request ids change nothing.
    Then ``flushed`` tells the limiter (which persists the accounts' windows) and the live meters
    (gateway/apps.py connects them)."""
    rows = [_cleaned(r) for r in records]
    if not rows:
        return 0
    try:
        _insert(rows)
    except IntegrityError:
        # A record's account or key is gone (the foreign keys are checked at commit): look for
        # them only now, not on every flush.
        rows = _without_orphans(rows, Account, ApiKey)
        if not rows:
            return 0
        _insert(rows)
    charges = [
        ledger.Charge(
            account_id=r.account_id,
            amount_micros=r.billed_micros,
            idempotency_key=f"usage:{r.request_id}",
            description=f"{r.model}: {r.input_tokens} in / {r.output_tokens} out",
            reference=r.request_id,
        )
        for r in rows
        if r.billed_micros > 0
    ]
    try:
        ledger.charge_many(charges)
    except IntegrityError:
        # Another drainer posted some of these between our check and insert: post one by one.
        for charge in charges:
            try:
                ledger.charge_many([charge])
            except IntegrityError:
                continue
    key_times: dict[int, int] = {}
    for r in rows:
        if r.key_id is not None and r.key_id > 0:
            key_times[r.key_id] = max(key_times.get(r.key_id, r.created_at_ms), r.created_at_ms)
    for key_id, at_ms in key_times.items():
        at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        ApiKey.objects.filter(pk=key_id).exclude(last_used_at__gte=at).update(last_used_at=at)
    flushed.send(sender=None, account_ids={r.account_id for r in rows})
    return len(rows)


DEAD_LETTERS = "tf:usage:dead"


def _without_orphans(
    rows: list[UsageRecord], account_model: Any, key_model: Any
) -> list[UsageRecord]:
    """Rows whose account no longer exists cannot be inserted, and one of them must not hold up
    every other record: park them (Redis list tf:usage:dead, or the log) and go on. A deleted key
    only loses the link, as its foreign key says."""
    account_ids = {r.account_id for r in rows}
    key_ids = {r.key_id for r in rows if r.key_id}
    known_accounts = set(
        account_model.objects.filter(pk__in=account_ids).values_list("pk", flat=True)
    )
    known_keys = set(key_model.objects.filter(pk__in=key_ids).values_list("pk", flat=True))
    kept = []
    for r in rows:
        if r.account_id not in known_accounts:
            _park(r)
            continue
        if r.key_id and r.key_id not in known_keys:
            r.key_id = None
        kept.append(r)
    return kept


def _park(row: UsageRecord) -> None:
    record = {
        "request_id": row.request_id,
        "account_id": row.account_id,
        "model": row.model,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "billed_micros": row.billed_micros,
    }
    logger.error("metering.orphan_record", extra=record)
    redis = store.sync_client()
    if redis is not None:
        redis.rpush(DEAD_LETTERS, orjson.dumps(record))


def _text(value: Any, limit: int) -> str:
    # A model name is whatever the caller sent; PostgreSQL refuses NUL in text, and one such
    # record would hold up every record drained with it.
    return str(value).replace("\x00", "")[:limit]


def _cleaned(r: UsageRecord) -> UsageRecord:
    """The record as its row will hold it (text cut to the columns' lengths, no key id 0)."""
    r.model = _text(r.model, 200)
    r.requested_model = _text(r.requested_model, 200)
    r.route = _text(r.route, 300)
    r.error_code = _text(r.error_code, 60)
    r.key_id = r.key_id or None
    return r


# ``gateway.models.UsageRecord``'s column for each field of a record, in the INSERT's order;
# ``created_at_ms`` (last) becomes the ``created_at`` timestamp.
_COLUMNS = {
    "request_id": "request_id",
    "account_id": "account_id",
    "key_id": "api_key_id",
    "surface": "surface",
    "endpoint": "endpoint",
    "model": "model",
    "route": "route",
    "status": "status",
    "error_code": "error_code",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "is_estimate": "is_estimate",
    "counted_by": "counted_by",
    "cost_micros": "cost_micros",
    "billed_micros": "billed_micros",
    "in_window": "in_window",
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
    "stream": "stream",
    "batch_id": "batch_id",
    "requested_model": "requested_model",
    "created_at_ms": "created_at",
}
_values = operator.attrgetter(*_COLUMNS)  # every field by name, in one call per record


def _insert(rows: list[UsageRecord]) -> None:
    """All rows through one parameterised INSERT ... ON CONFLICT DO NOTHING (a replayed request
    id changes nothing), in one transaction. Plain SQL rather than ``bulk_create``: the ORM
    compiled each value of each row in Python, which held the interpreter lock for tens of
    milliseconds per flush beside the event loop (the gateway's p50 at 64 clients: 10 ms better
    with no flush running)."""
    meta = UsageRow._meta
    quote = connection.ops.quote_name
    column = {f.attname: str(f.column) for f in meta.concrete_fields}
    # Identifiers from the model's metadata, values as parameters.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(column[name]) for name in _COLUMNS.values())}) "
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
        f"ON CONFLICT ({quote(column['request_id'])}) DO NOTHING"
    )
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        (*values[:-1], adapt(datetime.fromtimestamp(values[-1] / 1000, tz=UTC)))
        for values in map(_values, rows)
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)


def pending() -> int:
    """Records not yet in the database (for tests and the admin)."""
    count = len(_local)
    redis = store.sync_client()
    if redis is not None:
        try:
            count += int(redis.xlen(STREAM))
        except Exception:
            logger.warning("could not read the usage stream length")
    return count


def last_record_time(account_id: int) -> datetime | None:
    return UsageRow.objects.filter(account_id=account_id).aggregate(at=Max("created_at"))["at"]
