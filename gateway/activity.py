"""The per-request log a signed-in person reads: their account's usage records, newest first,
filtered by key, model, status and surface, and one record by its request id (the
``x-request-id`` a response carried). Every function takes the account: one account never sees
another's records."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from gateway.models import UsageRecord
from gateway.usage import SURFACES, InvalidQuery

PAGE_SIZE = 50
STATUSES = ("all", "ok", "error")


@dataclass(frozen=True, slots=True)
class Filters:
    key_id: int | None = None
    model: str | None = None
    # "all", "ok" (2xx and 3xx), "error" (4xx and 5xx) or one HTTP status code ("429").
    status: str = "all"
    surface: str = "all"
    # Only these keys' records (a developer sees the keys they made); None: every key's.
    key_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    records: list[UsageRecord]
    # Pass as ``before`` for the next (older) page; None on the last page.
    next_before: int | None


def check_status(status: str) -> str:
    if status in STATUSES or (status.isdigit() and len(status) == 3 and status[0] in "12345"):
        return status
    raise InvalidQuery(
        "status", f"status must be all, ok, error or an HTTP status code (429), not {status!r}."
    )


def check_surface(surface: str) -> str:
    if surface != "all" and surface not in SURFACES:
        raise InvalidQuery("surface", f"surface must be all, openai or anthropic, not {surface!r}.")
    return surface


def _matching(*, account_id: int, filters: Filters) -> QuerySet[UsageRecord]:
    rows = UsageRecord.objects.filter(account_id=account_id)
    if filters.key_id is not None:
        rows = rows.filter(api_key_id=filters.key_id)
    if filters.key_ids is not None:
        rows = rows.filter(api_key_id__in=filters.key_ids)
    if filters.model:
        rows = rows.filter(model=filters.model)
    if filters.surface != "all":
        rows = rows.filter(surface=filters.surface)
    if filters.status == "ok":
        rows = rows.filter(status__lt=400)
    elif filters.status == "error":
        rows = rows.filter(status__gte=400)
    elif filters.status != "all":
        rows = rows.filter(status=int(filters.status))
    return rows


def page(
    *, account_id: int, filters: Filters, before: int | None = None, size: int = PAGE_SIZE
) -> Page:
    """One page of the account's records, newest first; the ones after the record ``before`` (an
    id from the previous page's ``next_before``) when it is given."""
    rows = _matching(account_id=account_id, filters=filters).select_related("api_key")
    if before is not None:
        # Created before that record, or at the same instant with a lower id: the order below.
        mark = rows.filter(pk=before).values_list("created_at", flat=True).first()
        if mark is not None:
            rows = rows.filter(Q(created_at__lt=mark) | Q(created_at=mark, id__lt=before))
    found = list(rows.order_by("-created_at", "-id")[: size + 1])
    more = len(found) > size
    found = found[:size]
    return Page(records=found, next_before=found[-1].pk if more and found else None)


def recent(
    *, account_id: int, size: int = 8, key_ids: tuple[int, ...] | None = None
) -> list[UsageRecord]:
    return page(account_id=account_id, filters=Filters(key_ids=key_ids), size=size).records


def find(
    *, account_id: int, request_id: str, key_ids: tuple[int, ...] | None = None
) -> UsageRecord | None:
    """The account's record for this request id, or None (also when it is another account's,
    or, with ``key_ids``, another key's)."""
    rows = UsageRecord.objects.select_related("api_key").filter(
        account_id=account_id, request_id=request_id.strip()
    )
    if key_ids is not None:
        rows = rows.filter(api_key_id__in=key_ids)
    return rows.first()
