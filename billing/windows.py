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
