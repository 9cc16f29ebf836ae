from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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


def ms(*args: int) -> int:
    return windows.to_ms(at(*args))


def test_a_rolling_window_in_force_until_its_end_then_a_new_one_opens_at_the_request():
    start = ms(2026, 3, 1, 10)
    end = start + 5 * windows.HOUR_MS

    def rule(now: int, start: int = start, end: int = end) -> tuple[int, int, bool]:
        return windows.in_force_ms(kind="rolling", hours=5, start_ms=start, end_ms=end, now_ms=now)

    assert rule(end - 1) == (start, end, False)
    assert rule(end) == (end, end + 5 * windows.HOUR_MS, True)
    now = ms(2026, 3, 2, 9, 30)
    assert rule(now, 0, 0) == (now, now + 5 * windows.HOUR_MS, True)


def test_a_calendar_window_resets_at_the_first_instant_of_the_month():
    march, april = ms(2026, 3, 1), ms(2026, 4, 1)

    def rule(now: int) -> tuple[int, int, bool]:
        return windows.in_force_ms(
            kind="calendar_month", hours=0, start_ms=march, end_ms=april, now_ms=now
        )

    assert rule(april - 1) == (march, april, False)
    assert rule(april) == (april, ms(2026, 5, 1), True)


def test_it_restores_the_live_window_from_what_the_database_keeps():
    started = ms(2026, 3, 1, 10)
    assert windows.restored_ms(kind="rolling", hours=5, started_ms=started, used=7, now_ms=0) == (
        started,
        started + 5 * windows.HOUR_MS,
        7,
    )
    feb = ms(2026, 2, 14)
    assert windows.restored_ms(
        kind="calendar_month", hours=0, started_ms=feb, used=7, now_ms=ms(2026, 3, 2)
    ) == (feb, ms(2026, 3, 1), 7)
    assert windows.restored_ms(kind="rolling", hours=5, started_ms=0, used=7, now_ms=0) == (0, 0, 0)


def _window_cases() -> list[tuple[str, int, int, int, int]]:
    """(kind, hours, start_ms, end_ms, now_ms) around every edge: never opened, inside, at the
    end, past it, month and year boundaries, leap day."""
    cases = []
    for kind, hours in (("rolling", 5), ("rolling", 24), ("calendar_month", 0), ("none", 0)):
        for start in (at(2026, 1, 31, 22), at(2026, 2, 1), at(2028, 2, 29, 12), at(2026, 12, 1)):
            s = windows.to_ms(start)
            if kind == "calendar_month":
                e = windows.to_ms(windows.month_bounds(start)[1])
            else:
                e = s + hours * windows.HOUR_MS
            for now in (s - 1, s, s + 1, e - 1, e, e + 1, e + 40 * 24 * windows.HOUR_MS):
                cases.append((kind, hours, s, e, now))
            cases.append((kind, hours, 0, 0, s))
    return cases


def test_the_admission_scripts_window_rule_agrees_with_billing_windows():
    """gateway.limits.WINDOW_RULE_LUA is the Redis script's copy of in_force_ms: run it on Redis
    for every edge case and compare."""
    import orjson
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    import redis

    from gateway.limits import WINDOW_RULE_LUA

    script = (
        "local a = cjson.decode(ARGV[1])\n"
        "local kind, now, wstart, wend = a.window_kind, a.now_ms, a.start_ms, a.end_ms\n"
        + WINDOW_RULE_LUA
        + "return {wstart, wend, reset and 1 or 0}"
    )
    client = redis.Redis.from_url(settings.REDIS_URL)
    cases = _window_cases()
    assert len(cases) > 100
    for kind, hours, start, end, now in cases:
        month_start, month_end = windows.month_bounds_ms(now)
        args = {
            "window_kind": kind,
            "window_hours": hours,
            "start_ms": start,
            "end_ms": end,
            "now_ms": now,
            "month_start_ms": month_start,
            "month_end_ms": month_end,
        }
        lua_start, lua_end, lua_reset = client.eval(script, 0, orjson.dumps(args))
        python = windows.in_force_ms(kind=kind, hours=hours, start_ms=start, end_ms=end, now_ms=now)
        assert (lua_start, lua_end, bool(lua_reset)) == python, (kind, hours, start, end, now)
