"""The dashboard's usage page (charts, table, filters, the live meter) and its CSV export, scoped
to the signed-in person's account."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.timezone import now

from accounts.models import Account, ApiKey, User
from accounts.services import account_for
from billing import money
from gateway import usage
from gateway.models import UsageRollup

PERIODS = (("day", "Today"), ("week", "Last 7 days"), ("month", "This month"))
SURFACES = (("all", "Both surfaces"), ("openai", "OpenAI"), ("anthropic", "Anthropic"))


@dataclass(frozen=True)
class Filters:
    period: str
    key_id: int | None
    model: str | None
    surface: str

    def query(self) -> str:
        parts = [f"period={self.period}", f"surface={self.surface}"]
        if self.key_id is not None:
            parts.append(f"key={self.key_id}")
        if self.model:
            parts.append(f"model={quote(self.model)}")
        return "&".join(parts)


def _filters(request: HttpRequest, keys: QuerySet[ApiKey]) -> Filters:
    """Unknown values fall back to the defaults: a page never fails on a stale link."""
    period = request.GET.get("period", "month")
    if period not in dict(PERIODS):
        period = "month"
    surface = request.GET.get("surface", "all")
    if surface not in dict(SURFACES):
        surface = "all"
    raw_key = request.GET.get("key", "")
    key_id = int(raw_key) if raw_key.isdigit() else None
    if key_id is not None and not keys.filter(pk=key_id).exists():
        key_id = None
    model = request.GET.get("model", "").strip()[:200] or None
    return Filters(period=period, key_id=key_id, model=model, surface=surface)


def _report(account: Account, filters: Filters, group_by: tuple[str, ...]) -> usage.Report:
    rng = usage.period_range(filters.period, at=now())
    return usage.report(
        account_id=account.pk,
        start=rng.start,
        end=rng.end,
        surface=filters.surface,
        group_by=group_by,
        key_id=filters.key_id,
        model=filters.model,
    )


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days)]


def _chart_data(rep: usage.Report, today: date) -> dict[str, Any]:
    """Series for the four charts, every day of the range present (zeros included)."""
    days = _days(rep.start.date(), min(rep.end.date(), today + timedelta(days=1)))
    index = {d: n for n, d in enumerate(days)}
    models = sorted({b.model for b in rep.buckets if b.model})
    tokens = {m: [0] * len(days) for m in models}
    cost = [0] * len(days)
    errors = [0] * len(days)
    requests = [0] * len(days)
    surfaces: dict[str, int] = {}
    for b in rep.buckets:
        if b.day is None or b.day not in index or b.model is None:
            continue
        at = index[b.day]
        tokens[b.model][at] += b.totals.total_tokens
        cost[at] += b.totals.cost_micros
        errors[at] += b.totals.errors
        requests[at] += b.totals.requests
        if b.surface:
            surfaces[b.surface] = surfaces.get(b.surface, 0) + b.totals.requests
    return {
        "days": [d.isoformat() for d in days],
        "tokens_by_model": [{"model": m, "tokens": tokens[m]} for m in models],
        # Micro-dollars; the page shows them as dollars.
        "cost_micros": cost,
        "errors": errors,
        "requests": requests,
        "requests_by_surface": surfaces,
    }


@dataclass(frozen=True)
class TableRow:
    day: date
    model: str
    totals: usage.Totals


def _table(rep: usage.Report) -> list[TableRow]:
    merged: dict[tuple[date, str], usage.Totals] = {}
    for b in rep.buckets:
        if b.day is None or b.model is None:
            continue
        merged[(b.day, b.model)] = merged.get((b.day, b.model), usage.Totals()) + b.totals
    rows = sorted(
        (TableRow(day=d, model=m, totals=t) for (d, m), t in merged.items()),
        key=lambda r: r.model,
    )
    # Newest day first, models alphabetical within a day (the sort is stable).
    return sorted(rows, key=lambda r: r.day, reverse=True)


def _models_seen(account: Account, current: str | None) -> list[str]:
    seen = set(
        UsageRollup.objects.filter(account=account, granularity=UsageRollup.Granularity.DAY)
        .values_list("model", flat=True)
        .distinct()
    )
    seen |= set(account.usage.order_by().values_list("model", flat=True).distinct()[:200])
    if current:
        seen.add(current)
    return sorted(m for m in seen if m)


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    account = account_for(request.user)
    keys = ApiKey.objects.filter(account=account)
    filters = _filters(request, keys)
    rep = _report(account, filters, ("day", "model", "surface"))
    today = now().date()
    context: dict[str, Any] = {
        "account": account,
        "filters": filters,
        "periods": PERIODS,
        "surfaces": SURFACES,
        "keys": list(keys),
        "models": _models_seen(account, filters.model),
        "report": rep,
        "last_day": (rep.end - timedelta(days=1)).date(),
        "totals": rep.totals,
        "cost": money.format_usd(rep.totals.cost_micros),
        "billed": money.format_usd(rep.totals.billed_micros),
        "rows": _table(rep),
        "chart_data": _chart_data(rep, today),
        "meter": usage.meter_state(account.pk),
        "export_query": filters.query(),
    }
    return render(request, "gateway/usage.html", context)


@login_required
def usage_csv(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    account = account_for(request.user)
    keys = ApiKey.objects.filter(account=account)
    filters = _filters(request, keys)
    rep = _report(account, filters, ("day", "model", "surface", "key"))
    names = {k.pk: k.name for k in keys}
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    start = rep.start.date().isoformat()
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-{filters.period}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "day",
            "model",
            "surface",
            "key_id",
            "key_name",
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cost_micros",
            "billed_micros",
            "cost_usd",
        ]
    )
    for b in rep.buckets:
        t = b.totals
        writer.writerow(
            [
                b.day.isoformat() if b.day else "",
                b.model or "",
                b.surface or "",
                b.key_id or "",
                names.get(b.key_id or 0, ""),
                t.requests,
                t.errors,
                t.input_tokens,
                t.output_tokens,
                t.cached_tokens,
                t.cost_micros,
                t.billed_micros,
                money.format_usd(t.cost_micros).lstrip("$").replace(",", ""),
            ]
        )
    return response
