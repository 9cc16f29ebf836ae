"""The dashboard's usage page (charts, table, filters, the live meter) and its CSV export, scoped
to the signed-in person's account."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.timezone import now

from accounts import audit, orgs
from accounts.models import Account, ApiKey, Membership
from accounts.orgs import requires
from accounts.roles import Perm
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
    # The person whose keys' usage to show (a user id); only for those who see everyone's.
    member_id: int | None = None

    def query(self) -> str:
        parts = [f"period={self.period}", f"surface={self.surface}"]
        if self.key_id is not None:
            parts.append(f"key={self.key_id}")
        if self.member_id is not None:
            parts.append(f"member={self.member_id}")
        if self.model:
            parts.append(f"model={quote(self.model)}")
        return "&".join(parts)


def _filters(
    request: HttpRequest, keys: QuerySet[ApiKey], people: dict[int, str] | None = None
) -> Filters:
    """The page's query string. A value that cannot be used raises InvalidQuery: the page says
    which and answers 400, rather than quietly showing another period than the one asked for."""
    period = request.GET.get("period", "month") or "month"
    if period not in dict(PERIODS):
        raise usage.InvalidQuery(
            "period", f"period must be day, week or month, not {period[:40]!r}."
        )
    surface = request.GET.get("surface", "all") or "all"
    if surface not in dict(SURFACES):
        raise usage.InvalidQuery(
            "surface", f"surface must be all, openai or anthropic, not {surface[:40]!r}."
        )
    raw_key = request.GET.get("key", "")
    key_id = int(raw_key) if raw_key.isdigit() else None
    if raw_key and (key_id is None or not keys.filter(pk=key_id).exists()):
        raise usage.InvalidQuery("key", f"There is no key {raw_key[:40]!r} on your account.")
    model = request.GET.get("model", "").strip()[:200] or None
    raw_member = request.GET.get("member", "")
    member_id = int(raw_member) if raw_member.isdigit() else None
    if raw_member and (member_id is None or people is None or member_id not in people):
        raise usage.InvalidQuery(
            "member", f"There is no member {raw_member[:40]!r} whose usage you can see."
        )
    return Filters(period=period, key_id=key_id, model=model, surface=surface, member_id=member_id)


def _report(
    account: Account,
    filters: Filters,
    group_by: tuple[str, ...],
    *,
    hourly: bool = False,
    key_ids: list[int] | None = None,
) -> usage.Report:
    rng = usage.period_range(filters.period, at=now())
    return usage.report(
        key_ids=key_ids,
        account_id=account.pk,
        start=rng.start,
        end=rng.end,
        surface=filters.surface,
        group_by=group_by,
        key_id=filters.key_id,
        model=filters.model,
        hourly=hourly,
    )


# Periods short enough to chart by the hour: a day's or a week's usage in daily bars is one or
# seven bars, and "today" would always be a single one.
HOURLY_PERIODS = ("day", "week")
# The tokens chart names this many models and sums the rest as "Other (n models)", so its legend
# never crowds out the plot however many models an account uses.
TOP_MODELS = 7


def _slots(rep: usage.Report, *, hourly: bool, at: datetime) -> list[datetime]:
    """The chart's x axis: every hour (or day) of the report's range up to now, zeros included."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    last = min(rep.end, at.replace(minute=0, second=0, microsecond=0) + step)
    if not hourly:
        last = min(rep.end, datetime.combine(at.date() + timedelta(days=1), time.min, tzinfo=UTC))
    slots = []
    moment = rep.start
    while moment < last:
        slots.append(moment)
        moment += step
    return slots


def chart_data(rep: usage.Report, *, hourly: bool, at: datetime) -> dict[str, Any]:
    """Series for the four charts. ``rep`` is grouped by model and surface, and by day (or, when
    ``hourly``, split by hour)."""
    slots = _slots(rep, hourly=hourly, at=at)
    index = {slot: n for n, slot in enumerate(slots)}
    per_model: dict[str, list[int]] = {}
    cost = [0] * len(slots)
    errors = [0] * len(slots)
    requests = [0] * len(slots)
    surfaces: dict[str, int] = {}
    for b in rep.buckets:
        slot = (
            b.hour if hourly else (datetime.combine(b.day, time.min, tzinfo=UTC) if b.day else None)
        )
        if slot is None or slot not in index or b.model is None:
            continue
        at_slot = index[slot]
        per_model.setdefault(b.model, [0] * len(slots))[at_slot] += b.totals.total_tokens
        cost[at_slot] += b.totals.cost_micros
        errors[at_slot] += b.totals.errors
        requests[at_slot] += b.totals.requests
        if b.surface:
            surfaces[b.surface] = surfaces.get(b.surface, 0) + b.totals.requests
    ranked = sorted(per_model, key=lambda m: (-sum(per_model[m]), m))
    shown = ranked if len(ranked) <= TOP_MODELS + 1 else ranked[:TOP_MODELS]
    series = [{"model": m, "tokens": per_model[m]} for m in sorted(shown)]
    rest = [m for m in ranked if m not in shown]
    if rest:
        series.append(
            {
                "model": f"Other ({len(rest)} models)",
                "tokens": [sum(per_model[m][n] for m in rest) for n in range(len(slots))],
                "other": rest,
            }
        )
    return {
        "hourly": hourly,
        "slots": [slot.isoformat() for slot in slots],
        # Kept for the daily charts' callers: the days as dates.
        "days": [slot.date().isoformat() for slot in slots] if not hourly else [],
        "tokens_by_model": series,
        "models_total": len(ranked),
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


def _models_seen(account: Account, current: str | None, key_ids: list[int] | None) -> list[str]:
    """The models to offer in the filter: those the visible keys (None: every key) have used."""
    rollups = UsageRollup.objects.filter(account=account, granularity=UsageRollup.Granularity.DAY)
    records = account.usage.order_by()
    if key_ids is not None:
        rollups = rollups.filter(key_id__in=key_ids)
        records = records.filter(api_key_id__in=key_ids)
    seen = set(rollups.values_list("model", flat=True).distinct())
    seen |= set(records.values_list("model", flat=True).distinct()[:200])
    if current:
        seen.add(current)
    return sorted(m for m in seen if m)


def _scope(
    request: HttpRequest,
) -> tuple[Account, QuerySet[ApiKey], list[int] | None, dict[int, str] | None]:
    """The organisation, the keys whose usage this member sees, their ids (None: all) and,
    for those who see everyone's usage, the members to filter by (user id to e-mail)."""
    membership = orgs.current_membership(request)
    key_ids = orgs.usage_key_ids(membership)
    keys = ApiKey.objects.filter(account=membership.account)
    people: dict[int, str] | None = None
    if key_ids is not None:
        keys = keys.filter(pk__in=key_ids)
    else:
        people = dict(
            Membership.objects.filter(account=membership.account)
            .order_by("user__email")
            .values_list("user_id", "user__email")
        )
    return membership.account, keys, key_ids, people


def _member_keys(
    keys: QuerySet[ApiKey], filters: Filters, key_ids: list[int] | None
) -> list[int] | None:
    if filters.member_id is None:
        return key_ids
    return list(keys.filter(created_by_id=filters.member_id).values_list("pk", flat=True))


@requires(Perm.USAGE_OWN)
def usage_page(request: HttpRequest) -> HttpResponse:
    account, keys, visible, people = _scope(request)
    error: usage.InvalidQuery | None = None
    try:
        filters = _filters(request, keys, people)
    except usage.InvalidQuery as exc:
        error, filters = exc, Filters(period="month", key_id=None, model=None, surface="all")
    key_ids = _member_keys(keys, filters, visible)
    at = now()
    rep = _report(account, filters, ("day", "model", "surface"), key_ids=key_ids)
    hourly = filters.period in HOURLY_PERIODS
    charted = (
        _report(account, filters, ("model", "surface"), hourly=True, key_ids=key_ids)
        if hourly
        else rep
    )
    data = chart_data(charted, hourly=hourly, at=at)
    # Who spent what: only for those who see everyone's usage (a key's member is its maker).
    by_member = (
        [
            (people.get(b.member_id or 0, "") if b.member_id else "", b.totals)
            for b in _report(account, filters, ("member",), key_ids=key_ids).buckets
        ]
        if people is not None
        else []
    )
    context: dict[str, Any] = {
        "account": account,
        "error": error,
        "filters": filters,
        "periods": PERIODS,
        "surfaces": SURFACES,
        "keys": list(keys),
        "models": _models_seen(account, filters.model, visible),
        "report": rep,
        "last_day": (rep.end - timedelta(days=1)).date(),
        "totals": rep.totals,
        "rows": _table(rep),
        "chart_data": data,
        "bucket": "hour" if hourly else "day",
        "meter": usage.meter_state(account.pk),
        "export_query": filters.query(),
        "own_usage_only": people is None,
        "people": people,
        "by_member": sorted(by_member, key=lambda row: -row[1].cost_micros),
    }
    return render(request, "gateway/usage.html", context, status=400 if error else 200)


# What a spreadsheet reads as the start of a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that would start a formula gets a leading
    apostrophe, as OWASP recommends. Key names and model strings are the caller's words (any key
    holder chooses the model string in the owner's export)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@requires(Perm.USAGE_OWN)
def usage_csv(request: HttpRequest) -> HttpResponse:
    account, keys, key_ids, people = _scope(request)
    try:
        filters = _filters(request, keys, people)
    except usage.InvalidQuery as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    key_ids = _member_keys(keys, filters, key_ids)
    rep = _report(account, filters, ("day", "model", "surface", "key"), key_ids=key_ids)
    audit.record(
        action="usage.exported",
        account=account,
        request=request,
        target_kind="usage",
        target_label=f"{filters.period} from {rep.start.date().isoformat()}",
        after={
            "period": filters.period,
            "key_id": filters.key_id,
            "member_id": filters.member_id,
            "model": filters.model,
            "surface": filters.surface,
        },
    )
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
            "tokenizer_counted_requests",
            "estimated_requests",
        ]
    )
    for b in rep.buckets:
        t = b.totals
        writer.writerow(
            [
                b.day.isoformat() if b.day else "",
                spreadsheet_text(b.model or ""),
                b.surface or "",
                b.key_id or "",
                spreadsheet_text(names.get(b.key_id or 0, "")),
                t.requests,
                t.errors,
                t.input_tokens,
                t.output_tokens,
                t.cached_tokens,
                t.cost_micros,
                t.billed_micros,
                money.format_usd(t.cost_micros).lstrip("$").replace(",", ""),
                t.tokenizer_counted_requests,
                t.estimated_requests,
            ]
        )
    return response
