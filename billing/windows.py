"""Token windows: when one opens, closes and resets. Pure functions of aware UTC datetimes;
windows are half-open, [start, end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    at = at.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def bounds(
    *, kind: str, hours: int, started_at: datetime | None, at: datetime
) -> tuple[datetime, datetime] | None:
    """The window containing ``at``, or None when no window is open at ``at``.

    Rolling windows open with the first request after the previous one closed, so a rolling window
    that has ended (or never started) is not open: the next request opens a new one at its own time.
    Calendar-month windows are always open."""
    if kind == "calendar_month":
        return month_bounds(at)
    if kind == "rolling" and started_at is not None:
        end = started_at + timedelta(hours=hours)
        if started_at <= at < end:
            return started_at, end
    return None


def opening(*, kind: str, hours: int, at: datetime) -> tuple[datetime, datetime] | None:
    """The window a request at ``at`` opens when none is open."""
    if kind == "calendar_month":
        return month_bounds(at)
    if kind == "rolling":
        return at, at + timedelta(hours=hours)
    return None


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- the same rules in epoch milliseconds, as admission keeps them -------------------------------
#
# The live window is (start_ms, end_ms, used): start_ms 0 means no window has opened yet. The Redis
# admission script (gateway.limits) mirrors ``in_force_ms`` line for line, and
# tests/billing/test_windows.py proves the two agree.

HOUR_MS = 3_600_000


_last_month_ms = (0, 0)


def month_bounds_ms(now_ms: int) -> tuple[int, int]:
    global _last_month_ms
    start, end = _last_month_ms
    if start <= now_ms < end:  # every admission asks; the answer changes once a month
        return start, end
    found = month_bounds(from_ms(now_ms))
    _last_month_ms = to_ms(found[0]), to_ms(found[1])
    return _last_month_ms


def in_force_ms(
    *, kind: str, hours: int, start_ms: int, end_ms: int, now_ms: int
) -> tuple[int, int, bool]:
    """The window a request at ``now_ms`` counts against, given the live one: ``(start_ms,
    end_ms, reset)``; ``reset`` means a new window opened, so its counters start from zero.

    A rolling window opens with the first request after the previous one closed (or when none
    ever opened) and lasts ``hours``; a calendar-month window is the UTC month of ``now_ms``."""
    if kind == "calendar_month":
        month_start, month_end = month_bounds_ms(now_ms)
        if start_ms != month_start:
            return month_start, month_end, True
        return start_ms, end_ms, False
    if kind == "rolling" and (start_ms == 0 or now_ms >= end_ms):
        return now_ms, now_ms + hours * HOUR_MS, True
    return start_ms, end_ms, False


def restored_ms(
    *, kind: str, hours: int, started_ms: int, used: int, now_ms: int
) -> tuple[int, int, int]:
    """The live window ``(start_ms, end_ms, used)`` rebuilt from what the database keeps (the
    start, 0 when none opened, and the tokens used in it); ``in_force_ms`` then decides whether
    it still holds at ``now_ms``."""
    if started_ms <= 0:
        return 0, 0, 0
    if kind == "calendar_month":
        _, end = month_bounds(from_ms(started_ms))
        return started_ms, to_ms(end), used
    return started_ms, started_ms + hours * HOUR_MS, used
