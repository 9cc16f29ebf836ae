from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing import windows


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_it_keeps_a_rolling_window_open_until_its_end_exclusive():
    start = at(2026, 3, 1, 10)
    assert windows.bounds(kind="rolling", hours=5, started_at=start, at=at(2026, 3, 1, 14, 59)) == (
        start,
        start + timedelta(hours=5),
    )
    assert windows.bounds(kind="rolling", hours=5, started_at=start, at=at(2026, 3, 1, 15)) is None


def test_it_opens_a_rolling_window_at_the_first_request():
    opened = windows.opening(kind="rolling", hours=24, at=at(2026, 3, 1, 10, 30))
    assert opened == (at(2026, 3, 1, 10, 30), at(2026, 3, 2, 10, 30))


def test_it_uses_calendar_months_for_monthly_plans():
    assert windows.bounds(
        kind="calendar_month", hours=0, started_at=None, at=at(2026, 12, 31, 23)
    ) == (
        at(2026, 12, 1),
        at(2027, 1, 1),
    )
    assert windows.month_bounds(at(2028, 2, 29, 12)) == (at(2028, 2, 1), at(2028, 3, 1))


def test_it_has_no_window_for_unwindowed_plans():
    assert windows.opening(kind="none", hours=0, at=at(2026, 1, 1)) is None
