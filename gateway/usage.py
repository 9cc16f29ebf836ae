"""Usage reporting: hourly and daily rollups of the usage records, exact reports read from the
rollups plus the records not rolled up yet, pruning of old records, and the live meter's state.

Rollups are incremental and keyed by record id. ``roll_up`` first waits for every usage-record
insert in flight to commit (a brief SHARE lock on PostgreSQL; SQLite has one writer), reads the
highest id, then, holding the watermark row's lock, adds the records after the watermark to the
rollups and moves the watermark, all in one transaction. A record is therefore counted exactly
once, in the rollups (id <= watermark) or in the tail (id > watermark); a record that arrives late
just adds to an old bucket. Running it twice, or on two workers at once, changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any, cast

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import BigIntegerField, Case, Count, F, Max, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import now

from accounts.models import Account
from billing import money, windows
from gateway import limits
from gateway.models import RollupWatermark, UsageRecord, UsageRollup

logger = logging.getLogger("tokenfactory.usage")

WATERMARK = "usage"
SURFACES = ("openai", "anthropic")
GROUPS = ("model", "key", "day", "surface")
PERIODS = ("day", "week", "month")
MAX_RANGE = timedelta(days=400)
_OPTIMISTIC_READS = 3


class InvalidQuery(ValueError):
    """A report parameter that cannot be used; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


# --- what a report covers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """Half-open, [start, end), aware UTC."""

    start: datetime
    end: datetime


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def period_range(period: str, *, at: datetime) -> Range:
    """``day``: today; ``week``: the last 7 days, today included; ``month``: this calendar month.
    Days are UTC."""
    today = _midnight(at.astimezone(UTC).date())
    tomorrow = today + timedelta(days=1)
    if period == "day":
        return Range(today, tomorrow)
    if period == "week":
        return Range(today - timedelta(days=6), tomorrow)
    if period == "month":
        start, end = windows.month_bounds(at)
        return Range(start, end)
    raise InvalidQuery("period", f"period must be one of {', '.join(PERIODS)}, not {period!r}.")


def _instant(text: str, param: str, *, is_end: bool) -> datetime:
    moment: datetime | None = None
    try:
        # parse_date and parse_datetime raise ValueError for a well-formed impossible date
        # (2024-13-45); the day after 9999-12-31 overflows.
        day = parse_date(text) if len(text) == 10 else None
        if day is not None:
            # An end date is inclusive: end=2025-01-31 covers the whole of the 31st.
            return _midnight(day + timedelta(days=1) if is_end else day)
        moment = parse_datetime(text)
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise InvalidQuery(
            param,
            f"{param} must be a date (2025-01-31) or a time on the hour "
            f"(2025-01-31T13:00:00Z), not {text!r}.",
        )
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.minute or moment.second or moment.microsecond:
        raise InvalidQuery(param, f"{param} must be on the hour (usage is kept per hour).")
    return moment


def resolve_range(*, period: str | None, start: str | None, end: str | None, at: datetime) -> Range:
    """The range a request asks for: a named period, or start (and optionally end) dates; the
    current month when neither is given."""
    if period and (start or end):
        raise InvalidQuery("period", "Give either period or start/end, not both.")
    if end and not start:
        raise InvalidQuery("start", "end needs a start.")
    if not start:
        return period_range(period or "month", at=at)
    begins = _instant(start, "start", is_end=False)
    ends = (
        _instant(end, "end", is_end=True)
        if end
        else _midnight(at.astimezone(UTC).date() + timedelta(days=1))
    )
    if ends <= begins:
        raise InvalidQuery("end", "end must be after start.")
    if ends - begins > MAX_RANGE:
        raise InvalidQuery(
            "end", f"end is more than {MAX_RANGE.days} days after start; a report covers less."
        )
    return Range(begins, ends)


def parse_group_by(values: Iterable[str]) -> tuple[str, ...]:
    """``group_by=model,day`` or ``group_by=model&group_by=day``; order kept, duplicates dropped."""
    found: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in GROUPS:
                raise InvalidQuery(
                    "group_by",
                    f"group_by takes {', '.join(GROUPS)} (combined with commas), not {name!r}.",
                )
            if name not in found:
                found.append(name)
    return tuple(found)


def check_surface(surface: str) -> str:
    if surface != "all" and surface not in SURFACES:
        raise InvalidQuery("surface", f"surface must be openai, anthropic or all, not {surface!r}.")
    return surface


# --- reports ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    # Micro-dollars (1 USD = 1,000,000): list-price value, and what the balance paid.
    cost_micros: int = 0
    billed_micros: int = 0
    # Requests whose tokens the upstream did not report (UsageRecord.counted_by): counted by the
    # upstream's own tokenizer, or estimated by ours.
    tokenizer_counted_requests: int = 0
    estimated_requests: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cost_micros=self.cost_micros + other.cost_micros,
            billed_micros=self.billed_micros + other.billed_micros,
            tokenizer_counted_requests=self.tokenizer_counted_requests
            + other.tokenizer_counted_requests,
            estimated_requests=self.estimated_requests + other.estimated_requests,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> str:
        return money.format_usd(self.cost_micros)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One group of a report; a dimension the report is not grouped by is None."""

    day: date | None
    model: str | None
    surface: str | None
    key_id: int | None
    totals: Totals
    # The hour's start (UTC) in an hourly report (``report(hourly=True)``); None otherwise.
    hour: datetime | None = None


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    surface: str
    group_by: tuple[str, ...]
    totals: Totals
    buckets: list[Bucket]


_SUMS = (
    "s_requests",
    "s_errors",
    "s_input",
    "s_output",
    "s_cached",
    "s_cost",
    "s_billed",
    "s_tokenizer",
    "s_estimated",
)


def _granularity(start: datetime, end: datetime) -> str:
    if start.time() == time.min and end.time() == time.min:
        return UsageRollup.Granularity.DAY
    return UsageRollup.Granularity.HOUR


def _rolled_up_to() -> int:
    value = (
        RollupWatermark.objects.filter(name=WATERMARK)
        .values_list("last_record_id", flat=True)
        .first()
    )
    return int(value or 0)


def _dims(group_by: Sequence[str], *, hourly: bool = False) -> tuple[str, ...]:
    # Totals alone still group by something small, so both halves are plain grouped queries.
    dims = tuple(f"g_{name}" for name in group_by)
    if hourly:
        dims += ("g_hour",)
    return dims or ("g_surface",)


def _rollup_rows(
    *,
    account_id: int,
    rng: Range,
    surface: str,
    key_id: int | None,
    model: str | None,
    dims: tuple[str, ...],
    key_ids: Sequence[int] | None = None,
) -> QuerySet[UsageRollup, dict[str, Any]]:
    hourly = "g_hour" in dims
    granularity = UsageRollup.Granularity.HOUR if hourly else _granularity(rng.start, rng.end)
    rows = UsageRollup.objects.filter(
        account_id=account_id,
        granularity=granularity,
        bucket__gte=rng.start,
        bucket__lt=rng.end,
    )
    if surface != "all":
        rows = rows.filter(surface=surface)
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    if key_ids is not None:
        rows = rows.filter(key_id__in=key_ids)
    if model is not None:
        rows = rows.filter(model=model)
    day = F("bucket") if granularity == UsageRollup.Granularity.DAY else TruncDay("bucket")
    exprs: dict[str, Any] = {
        "g_model": F("model"),
        "g_key": F("key_id"),
        "g_day": day,
        "g_surface": F("surface"),
        "g_hour": F("bucket"),
    }
    return (
        rows.annotate(**{d: exprs[d] for d in dims})
        .values(*dims)
        .annotate(
            s_requests=Sum("requests"),
            s_errors=Sum("errors"),
            s_input=Sum("input_tokens"),
            s_output=Sum("output_tokens"),
            s_cached=Sum("cached_tokens"),
            s_cost=Sum("cost_micros"),
            s_billed=Sum("billed_micros"),
            s_tokenizer=Sum("tokenizer_counted_requests"),
            s_estimated=Sum("estimated_requests"),
        )
        .order_by()
    )


def _record_sums() -> dict[str, Any]:
    return {
        "s_requests": Count("id"),
        "s_errors": Sum(Case(When(status__gte=400, then=Value(1)), default=Value(0))),
        "s_input": Sum("input_tokens"),
        "s_output": Sum("output_tokens"),
        "s_cached": Sum("cached_tokens"),
        "s_cost": Sum("cost_micros"),
        "s_billed": Sum("billed_micros"),
        "s_tokenizer": Sum(
            Case(When(counted_by__startswith="tokenizer:", then=Value(1)), default=Value(0))
        ),
        "s_estimated": Sum(Case(When(counted_by="estimate", then=Value(1)), default=Value(0))),
    }


def _tail_rows(
    *,
    account_id: int,
    rng: Range,
    surface: str,
    key_id: int | None,
    model: str | None,
    dims: tuple[str, ...],
    after_id: int,
    key_ids: Sequence[int] | None = None,
) -> QuerySet[UsageRecord, dict[str, Any]]:
    rows = UsageRecord.objects.filter(
        id__gt=after_id,
        account_id=account_id,
        created_at__gte=rng.start,
        created_at__lt=rng.end,
    )
    if surface != "all":
        rows = rows.filter(surface=surface)
    if key_id is not None:
        rows = rows.filter(api_key_id=key_id)
    if key_ids is not None:
        rows = rows.filter(api_key_id__in=key_ids)
    if model is not None:
        rows = rows.filter(model=model)
    exprs: dict[str, Any] = {
        "g_model": F("model"),
        "g_key": Coalesce(F("api_key_id"), Value(0), output_field=BigIntegerField()),
        "g_day": TruncDay("created_at"),
        "g_surface": F("surface"),
        "g_hour": TruncHour("created_at"),
    }
    return (
        rows.annotate(**{d: exprs[d] for d in dims})
        .values(*dims)
        .annotate(**_record_sums())
        .order_by()
    )


def _as_hour(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    return datetime.fromisoformat(str(value)).date()


def report(
    *,
    account_id: int,
    start: datetime,
    end: datetime,
    surface: str = "all",
    group_by: Sequence[str] = (),
    key_id: int | None = None,
    model: str | None = None,
    hourly: bool = False,
    key_ids: Sequence[int] | None = None,
) -> Report:
    """The account's usage in [start, end): the rollups plus the records after the watermark, so
    the answer is exact whether or not the rollups have run. ``start`` and ``end`` fall on hour
    boundaries (whole days read the daily rollups). ``hourly`` also splits every bucket by hour
    (``Bucket.hour``), read from the hourly rollups. ``key_ids`` keeps only those keys' usage (a
    developer's own, accounts.orgs.usage_key_ids)."""
    rng = Range(start.astimezone(UTC), end.astimezone(UTC))
    if (hourly or _granularity(rng.start, rng.end) == UsageRollup.Granularity.HOUR) and (
        rng.start.minute or rng.start.second or rng.end.minute or rng.end.second
    ):
        raise InvalidQuery("start", "start and end must be on the hour.")
    check_surface(surface)
    group_by = parse_group_by(group_by)
    dims = _dims(group_by, hourly=hourly)
    filters: dict[str, Any] = {
        "account_id": account_id,
        "rng": rng,
        "surface": surface,
        "key_id": key_id,
        "model": model,
        "dims": dims,
    }
    if key_ids is not None:
        filters["key_ids"] = list(key_ids)
    rows = _read_consistently(filters)
    merged: dict[tuple[Any, ...], Totals] = {}
    for row in rows:
        ident = tuple(
            _as_date(row[d]) if d == "g_day" else _as_hour(row[d]) if d == "g_hour" else row[d]
            for d in dims
        )
        sums = Totals(*(int(row[s] or 0) for s in _SUMS))
        merged[ident] = merged.get(ident, Totals()) + sums
    buckets = []
    for ident, totals in merged.items():
        values = dict(zip(dims, ident, strict=True))
        buckets.append(
            Bucket(
                day=values.get("g_day") if "day" in group_by else None,
                model=values.get("g_model") if "model" in group_by else None,
                surface=values.get("g_surface") if "surface" in group_by else None,
                key_id=values.get("g_key") if "key" in group_by else None,
                totals=totals,
                hour=values.get("g_hour"),
            )
        )
    buckets.sort(
        key=lambda b: (
            b.day or date.min,
            b.hour or datetime.min.replace(tzinfo=UTC),
            b.model or "",
            b.surface or "",
            b.key_id or 0,
        )
    )
    if not group_by and not hourly:
        total = sum((b.totals for b in buckets), Totals())
        buckets = [Bucket(day=None, model=None, surface=None, key_id=None, totals=total)]
    totals = sum((b.totals for b in buckets), Totals())
    return Report(
        start=rng.start,
        end=rng.end,
        surface=surface,
        group_by=group_by,
        totals=totals,
        buckets=buckets,
    )


def _read_consistently(filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Rollups and tail as of one watermark. Optimistic: read the watermark, run the query, read
    it again; a rollup that committed in between means a retry. Rollups are rare (once a minute),
    so the retry almost never happens; after a few, read under the watermark's lock."""
    for _ in range(_OPTIMISTIC_READS):
        before = _rolled_up_to()
        rows = _query(filters, before)
        if _rolled_up_to() == before:
            return rows
    with transaction.atomic():
        mark = _watermark_for_update()
        return _query(filters, mark.last_record_id)


def _query(filters: dict[str, Any], after_id: int) -> list[dict[str, Any]]:
    # One statement, so both halves see the same committed rollups.
    rolled = _rollup_rows(**filters)
    tail = _tail_rows(**filters, after_id=after_id)
    return list(rolled.union(tail, all=True))


# --- rolling up -------------------------------------------------------------------------------


def _watermark_for_update(*, wait: bool = True) -> RollupWatermark:
    try:
        with transaction.atomic():
            RollupWatermark.objects.get_or_create(name=WATERMARK)
    except IntegrityError:
        pass  # another worker created it first
    return RollupWatermark.objects.select_for_update(nowait=not wait).get(name=WATERMARK)


def _committed_max_id(*, wait: bool) -> int:
    """The highest usage-record id such that every record up to it has committed."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # SHARE waits for transactions inserting records to finish and holds new inserts off
            # for the moment it takes to read max(id); ids come from a sequence, so any record
            # that commits later gets a higher id. Without ``wait`` it gives up at once rather
            # than queue (queued, it would hold up the inserts behind it).
            table = connection.ops.quote_name(UsageRecord._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '60s'")
                cursor.execute(f"LOCK TABLE {table} IN SHARE MODE{'' if wait else ' NOWAIT'}")
        top = UsageRecord.objects.aggregate(top=Max("id"))["top"]
    return int(top or 0)


def roll_up(*, batch_records: int = 100_000, wait: bool = True) -> int:
    """Add the records after the watermark to the hourly and daily rollups; returns how many were
    added. Idempotent and safe on concurrent workers (see the module docstring). With ``wait``
    off it raises ``OperationalError`` instead of waiting for a lock."""
    upto = _committed_max_id(wait=wait)
    added = 0
    while True:
        with transaction.atomic():
            mark = _watermark_for_update(wait=wait)
            if mark.last_record_id >= upto:
                break
            high = min(upto, mark.last_record_id + batch_records)
            added += _add(after_id=mark.last_record_id, upto_id=high)
            mark.last_record_id = high
            mark.rolled_at = now()
            mark.save(update_fields=["last_record_id", "rolled_at"])
    if added:
        logger.info("rolled up usage", extra={"records": added, "watermark": upto})
    return added


_Ident = tuple[int, int, str, str, datetime]


def _add(*, after_id: int, upto_id: int) -> int:
    rows = (
        UsageRecord.objects.filter(id__gt=after_id, id__lte=upto_id)
        .annotate(
            g_key=Coalesce(F("api_key_id"), Value(0), output_field=BigIntegerField()),
            g_hour=TruncHour("created_at"),
        )
        .values("account_id", "g_key", "model", "surface", "g_hour")
        .annotate(**_record_sums())
        .order_by()
    )
    hours: dict[_Ident, Totals] = {}
    days: dict[_Ident, Totals] = {}
    count = 0
    for found in rows:
        row = cast(dict[str, Any], found)
        sums = Totals(*(int(row[s] or 0) for s in _SUMS))
        count += sums.requests
        hour = row["g_hour"].astimezone(UTC)
        ident = (row["account_id"], int(row["g_key"]), row["model"], row["surface"], hour)
        hours[ident] = hours.get(ident, Totals()) + sums
        day_ident = (*ident[:4], hour.replace(hour=0))
        days[day_ident] = days.get(day_ident, Totals()) + sums
    _upsert(UsageRollup.Granularity.HOUR, hours)
    _upsert(UsageRollup.Granularity.DAY, days)
    return count


_COLUMNS = (
    "account_id",
    "key_id",
    "model",
    "surface",
    "granularity",
    "bucket",
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_micros",
    "billed_micros",
    "tokenizer_counted_requests",
    "estimated_requests",
)
_CHUNK = 500


def _upsert(granularity: str, sums: dict[_Ident, Totals]) -> None:
    """Add to existing rows (INSERT ... ON CONFLICT DO UPDATE, PostgreSQL and SQLite alike)."""
    if not sums:
        return
    quote = connection.ops.quote_name
    table = quote(UsageRollup._meta.db_table)
    added = ", ".join(
        f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in _COLUMNS[6:]
    )
    conflict = ", ".join(
        quote(c) for c in ("account_id", "granularity", "bucket", "key_id", "model", "surface")
    )
    one = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    items = list(sums.items())
    with connection.cursor() as cursor:
        for at in range(0, len(items), _CHUNK):
            chunk = items[at : at + _CHUNK]
            params: list[Any] = []
            for (account_id, key_id, model, surface, bucket), t in chunk:
                params += [
                    account_id,
                    key_id,
                    model,
                    surface,
                    granularity,
                    connection.ops.adapt_datetimefield_value(bucket),
                    t.requests,
                    t.errors,
                    t.input_tokens,
                    t.output_tokens,
                    t.cached_tokens,
                    t.cost_micros,
                    t.billed_micros,
                    t.tokenizer_counted_requests,
                    t.estimated_requests,
                ]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(quote(c) for c in _COLUMNS)}) "  # noqa: S608
                f"VALUES {', '.join([one] * len(chunk))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {added}",
                params,
            )


# --- pruning ----------------------------------------------------------------------------------


def retention() -> timedelta:
    return timedelta(days=max(0, int(getattr(settings, "USAGE_RETENTION_DAYS", 90))))


def prune(*, keep: timedelta | None = None, batch_size: int = 5_000) -> int:
    """Delete usage records older than the retention, but only ones already rolled up: a record
    after the watermark stays whatever its age. Returns how many were deleted."""
    cutoff = now() - (retention() if keep is None else keep)
    rolled = _rolled_up_to()
    deleted = 0
    while True:
        ids = list(
            UsageRecord.objects.filter(id__lte=rolled, created_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        UsageRecord.objects.filter(id__in=ids, id__lte=rolled).delete()
        deleted += len(ids)


# --- the live meter ---------------------------------------------------------------------------


def meter_group(account_id: int) -> str:
    return f"meter.{account_id}"


# Who has a live meter open, per account: a count in the cache, so a flush only works out and
# pushes the meters somebody is looking at. The count never expires (a tab may stay open for
# days with no traffic): a process that dies with meters open leaves its share behind, which
# costs pushes nobody receives, never a missed one.


def _watching_key(account_id: int) -> str:
    return f"tf:meter:watching:{account_id}"


def watch_meter(account_id: int, *, opened: bool) -> None:
    """A dashboard opened (or closed) its live meter for this account."""
    key = _watching_key(account_id)
    try:
        if opened:
            cache.add(key, 0, None)
            cache.incr(key)
        elif cache.decr(key) <= 0:
            cache.delete(key)
    except ValueError:
        pass  # the cache lost the entry (restarted, or evicted it)
    except Exception:
        logger.exception("could not count the live meter's watchers")


def watched_meters(account_ids: Iterable[int]) -> list[int]:
    ids = list(account_ids)
    if not ids:
        return []
    try:
        counts = cache.get_many([_watching_key(a) for a in ids])
    except Exception:
        logger.exception("could not read the live meter's watchers; pushing to all")
        return ids
    return [a for a in ids if counts.get(_watching_key(a), 0) > 0]


def meter_state(account_id: int, *, at: datetime | None = None) -> dict[str, Any]:
    """What the dashboard's live meter shows: token window remaining, balance, requests this
    minute."""
    at = at or now()
    account = Account.objects.select_related("plan").get(pk=account_id)
    plan = account.plan
    remaining: int | None = None
    resets_at: datetime | None = None
    if plan.window_tokens is not None and plan.window_kind != "none":
        used = 0
        live = limits.window_state(account_id)
        started = (
            windows.from_ms(live["start"]) if live and live.get("start") else None
        ) or account.window_started_at
        current = windows.bounds(
            kind=plan.window_kind, hours=plan.window_hours, started_at=started, at=at
        )
        if current is not None:
            resets_at = current[1]
            if live and live.get("start") and windows.from_ms(live["start"]) == current[0]:
                used = int(live.get("used", 0)) + int(live.get("reserved", 0))
            elif account.window_started_at == current[0]:
                used = account.window_used_tokens
        remaining = max(0, plan.window_tokens - used)
    balance = limits.live_balance(account_id)
    balance_micros = account.balance_micros if balance is None else balance
    minute = at.replace(second=0, microsecond=0)
    this_minute = UsageRecord.objects.filter(account_id=account_id, created_at__gte=minute).count()
    return {
        "type": "meter",
        "account_id": account_id,
        "window_tokens": plan.window_tokens,
        "window_remaining_tokens": remaining,
        "window_resets_at": resets_at.isoformat() if resets_at else None,
        "balance_micros": balance_micros,
        "balance": money.format_usd(balance_micros),
        "requests_this_minute": this_minute,
        "at": at.isoformat(),
    }


def publish_meter(account_ids: Iterable[int]) -> None:
    """Push the meter's state to every dashboard watching these accounts. Never raises: a channel
    layer that is down must not stop metering."""
    try:
        layer = get_channel_layer()
    except Exception:
        logger.exception("no channel layer for the live meter")
        return
    if layer is None:
        return
    for account_id in watched_meters(account_ids):
        try:
            state = meter_state(account_id)
            async_to_sync(layer.group_send)(
                meter_group(account_id), {"type": "meter.update", "state": state}
            )
        except Exception:
            logger.exception("could not push the live meter", extra={"account_id": account_id})


# --- after each metering flush ----------------------------------------------------------------

_IN_PROCESS_EVERY = {"roll_up": 60.0, "prune": 86_400.0}
_last_in_process: dict[str, float] = {}
_in_process_lock = threading.Lock()


def after_flush(account_ids: Iterable[int]) -> None:
    """Called by metering once records are written: push the live meters and, when no Celery
    worker runs the schedules (the embedded default), roll up and prune from here, at most once
    a minute and once a day. Never raises."""
    publish_meter(account_ids)
    if settings.METERING_DRAIN_IN_PROCESS:
        for job, every in _IN_PROCESS_EVERY.items():
            _maybe_run(job, every)


def _maybe_run(job: str, every_s: float) -> None:
    clock = monotonic()
    with _in_process_lock:
        last = _last_in_process.get(job)
        if last is not None and clock - last < every_s:
            return
        _last_in_process[job] = clock
    try:
        if job == "roll_up":
            roll_up(wait=False)
        else:
            prune()
    except OperationalError:
        # Busy (a lock is held): the first flush after the next interval tries again.
        logger.info("in-process usage job skipped: busy", extra={"job": job})
    except Exception:
        logger.exception("in-process usage job failed; it runs again later", extra={"job": job})
