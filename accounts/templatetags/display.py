"""How the dashboard shows money, times and durations: one format for each, on every page.

Money: totals, balances and prices with two places (``$1,234.56``; ``<$0.01`` for a sub-cent
amount that is not zero); per-request and per-row costs with four (``$0.0042``), so a column
never mixes 2 and 6 decimals. Times: ``12 Mar 2025, 14:05`` in UTC, inside a ``<time>`` whose
``datetime`` is the exact ISO instant."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.money import MICROS_PER_DOLLAR

register = template.Library()


def usd_fixed(micros: int | None, places: int) -> str:
    """``micros`` (1 USD = 1,000,000) as dollars with exactly ``places`` decimals, rounded half
    up; a non-zero amount that would show as zero shows as ``<$0.01`` (or ``<$0.0001``)."""
    if micros is None:
        return "—"
    step = MICROS_PER_DOLLAR // 10**places
    sign = "-" if micros < 0 else ""
    amount = abs(int(micros))
    units = (amount + step // 2) // step
    if units == 0 and amount:
        return f"<{sign}$0.{'1'.rjust(places, '0')}"
    whole, frac = divmod(units, 10**places)
    return f"{sign}${whole:,}.{frac:0{places}d}"


@register.filter
def usd(micros: int | None) -> str:
    return usd_fixed(micros, 2)


@register.filter
def usd4(micros: int | None) -> str:
    return usd_fixed(micros, 4)


def when_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%-d %b %Y, %H:%M")


@register.filter
def when(moment: datetime | None) -> SafeString | str:
    """``<time datetime="2025-03-12T14:05:09+00:00">12 Mar 2025, 14:05</time>`` (UTC)."""
    if moment is None:
        return "—"
    exact = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        exact.isoformat(),
        exact.strftime("%Y-%m-%d %H:%M:%S"),
        when_text(exact),
    )


@register.filter
def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 string (as the live meter's state carries) back to a datetime for ``when``."""
    return datetime.fromisoformat(text) if text else None


@register.filter
def duration_ms(value: int | None) -> str:
    """``840 ms``, ``2.4 s``; ``—`` when unknown."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:,} ms"
    return f"{value / 1000:,.1f} s"
