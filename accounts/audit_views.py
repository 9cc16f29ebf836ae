"""The audit log page (/audit/) and its CSV, for the organisation the request acts for: owners
and admins only (``Perm.AUDIT_VIEW``). Reading is accounts.audit.events; the download is itself
an audit event (audit.exported)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from typing import Any, cast
from urllib.parse import urlencode

import orjson
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.timezone import now

from accounts import audit
from accounts.models import AuditEvent
from accounts.orgs import requires
from accounts.roles import Perm

PAGE_SIZE = 50


class BadFilter(ValueError):
    pass


def _date(request: HttpRequest, name: str) -> date | None:
    text = request.GET.get(name, "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadFilter(f"{name} must be a date like 2025-03-12; got {text[:40]!r}.") from exc


def _filters(request: HttpRequest) -> audit.Filters:
    """The query string as filters; a value that cannot be used raises BadFilter (the page says
    which and shows everything rather than quietly something else)."""
    action = request.GET.get("action", "").strip()
    if action and action not in audit.ACTIONS and action not in audit.CATEGORIES:
        raise BadFilter(f"There is no action or category {action[:64]!r}; pick one from the list.")
    since, until = _date(request, "since"), _date(request, "until")
    if since and until and since > until:
        raise BadFilter("The 'from' date is after the 'to' date; swap them.")
    return audit.Filters(
        action=action,
        actor=request.GET.get("actor", "").strip()[:200],
        target=request.GET.get("target", "").strip()[:200],
        since=since,
        until=until,
    )


@requires(Perm.AUDIT_VIEW)
def audit_page(request: HttpRequest) -> HttpResponse:
    account = audit_account(request)
    error: BadFilter | None = None
    try:
        filters = _filters(request)
    except BadFilter as exc:
        error, filters = exc, audit.Filters()
    paginator = Paginator(audit.events(account_id=account, filters=filters), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    query = filters.as_dict()
    context: dict[str, Any] = {
        "error": error,
        "filters": filters,
        "actions": audit.ACTIONS,
        "categories": audit.CATEGORIES,
        "events_page": page,
        "rows": [(event, audit.changes(event)) for event in page.object_list],
        "query": urlencode(query),
        "filtered": bool(query),
    }
    return render(request, "accounts/audit.html", context, status=400 if error else 200)


def audit_account(request: HttpRequest) -> int:
    account_id = request.membership.account_id  # type: ignore[attr-defined]
    assert isinstance(account_id, int)
    return account_id


# What a spreadsheet reads as the start of a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    """csv.writer's file: hands each row back instead of storing it, for streaming."""

    def write(self, value: str) -> str:
        return value


HEADER = [
    "time_utc",
    "action",
    "what",
    "actor_kind",
    "actor",
    "target_kind",
    "target_id",
    "target",
    "ip",
    "user_agent",
    "before",
    "after",
]


def _json(value: Any) -> str:
    return "" if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def csv_rows(events: Iterator[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(HEADER)
    for e in events:
        yield writer.writerow(
            [
                e.at.isoformat(),
                e.action,
                audit.ACTIONS.get(e.action, e.action),
                e.actor_kind,
                _cell(e.actor_label),
                e.target_kind,
                _cell(e.target_id),
                _cell(e.target_label),
                e.ip or "",
                _cell(e.user_agent),
                _cell(_json(e.before)),
                _cell(_json(e.after)),
            ]
        )


@requires(Perm.AUDIT_VIEW)
def audit_csv(request: HttpRequest) -> HttpResponse:
    account = audit_account(request)
    try:
        filters = _filters(request)
    except BadFilter as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    audit.record(action="audit.exported", account=account, request=request, after=filters.as_dict())
    rows = audit.events(account_id=account, filters=filters).iterator(chunk_size=500)
    response = StreamingHttpResponse(csv_rows(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{now():%Y%m%d-%H%M%S}.csv"'
    # Streamed, so a long log never sits in memory (requires() types views as HttpResponse).
    return cast(HttpResponse, response)
