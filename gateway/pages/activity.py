"""The Activity page: the signed-in account's requests one by one (status, model, tokens, cost,
latency, time to first token, request id), filtered by key, model, status and surface, and one
request's detail by its id, as a user quotes it from ``x-request-id``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts import orgs
from accounts.models import Account, ApiKey
from accounts.orgs import requires
from accounts.roles import Perm
from gateway import activity
from gateway.models import UsageRecord
from gateway.usage import InvalidQuery

STATUS_CHOICES = (("all", "Any status"), ("ok", "Succeeded"), ("error", "Failed (4xx, 5xx)"))
SURFACE_CHOICES = (("all", "Both surfaces"), ("openai", "OpenAI"), ("anthropic", "Anthropic"))


def _account(request: HttpRequest) -> Account:
    return orgs.current_membership(request).account


def _key_ids(request: HttpRequest) -> tuple[int, ...] | None:
    ids = orgs.usage_key_ids(orgs.current_membership(request))
    return None if ids is None else tuple(ids)


def _visible_keys(request: HttpRequest, account: Account) -> list[ApiKey]:
    ids = _key_ids(request)
    rows = ApiKey.objects.filter(account=account)
    return list(rows if ids is None else rows.filter(pk__in=ids))


def _filters(request: HttpRequest, account: Account) -> activity.Filters:
    """The page's query string; a value that cannot be used raises InvalidQuery (the page says
    which and answers 400 rather than quietly showing something else)."""
    raw_key = request.GET.get("key", "")
    key_id: int | None = None
    if raw_key:
        visible = {k.pk for k in _visible_keys(request, account)}
        if not raw_key.isdigit() or int(raw_key) not in visible:
            raise InvalidQuery("key", f"There is no key {raw_key!r} on your account.")
        key_id = int(raw_key)
    return activity.Filters(
        key_ids=_key_ids(request),
        key_id=key_id,
        model=request.GET.get("model", "").strip()[:200] or None,
        status=activity.check_status(request.GET.get("status", "all") or "all"),
        surface=activity.check_surface(request.GET.get("surface", "all") or "all"),
    )


def _models(account: Account) -> list[str]:
    seen = UsageRecord.objects.filter(account=account).order_by().values_list("model", flat=True)
    return sorted(set(seen.distinct()[:200]))


@requires(Perm.USAGE_OWN)
def activity_page(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    wanted = request.GET.get("request_id", "").strip()
    if wanted:
        # The search box: a request id goes straight to its detail (or its not-found page).
        return redirect("activity_detail", request_id=wanted[:64])
    error: InvalidQuery | None = None
    try:
        filters = _filters(request, account)
    except InvalidQuery as exc:
        error, filters = exc, activity.Filters(key_ids=_key_ids(request))
    raw_before = request.GET.get("before", "")
    before = int(raw_before) if raw_before.isdigit() else None
    found = activity.page(account_id=account.pk, filters=filters, before=before)
    query = {
        name: value
        for name, value in (
            ("key", filters.key_id or ""),
            ("model", filters.model or ""),
            ("status", "" if filters.status == "all" else filters.status),
            ("surface", "" if filters.surface == "all" else filters.surface),
        )
        if value
    }
    context: dict[str, Any] = {
        "filters": filters,
        "error": error,
        "keys": _visible_keys(request, account),
        "models": _models(account),
        "statuses": STATUS_CHOICES,
        "surfaces": SURFACE_CHOICES,
        "found": found,
        "older_query": urlencode({**query, "before": found.next_before})
        if found.next_before
        else None,
        "filtered": bool(query),
        "paged": before is not None,
    }
    return render(request, "gateway/activity.html", context, status=400 if error else 200)


@requires(Perm.USAGE_OWN)
def activity_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    account = _account(request)
    record = activity.find(account_id=account.pk, request_id=request_id, key_ids=_key_ids(request))
    context = {"record": record, "request_id": request_id}
    return render(request, "gateway/activity_detail.html", context, status=200 if record else 404)
