"""Monthly spend caps: one per member (all the keys that member made in the organisation, counted
together) and one per key, in integer micro-dollars, for the calendar month in UTC.

Setting a cap is here (audited, and announced to the gateway's key caches); enforcing it is
``gateway.limits`` (held atomically at admission like the balance). What a month spent so far is
read here from the database, the rollups plus the records after the rollup watermark: the
gateway rebuilds its live copy from it when Redis has none (a restart, a flush), and the Budgets
page shows it. "Spend" is what the usage cost at the model's prices (``cost_micros``), whether
the plan's token window or the prepaid balance paid for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils.timezone import now

from accounts import audit, keys
from accounts.models import Account, ApiKey, Membership
from billing import money, windows
from gateway.models import RollupWatermark, UsageRecord, UsageRollup

# gateway.usage.WATERMARK: the rollups hold every record up to this watermark's id.
_WATERMARK = "usage"


class BudgetError(ValueError):
    """A cap that cannot be set; the message says what to send instead."""


def parse_usd(text: str | None) -> int | None:
    """A cap typed in dollars ("25", "12.50"; empty: no cap) as micro-dollars."""
    if text is None or not str(text).strip():
        return None
    try:
        micros = money.from_dollars(str(text))
    except ValueError as exc:
        raise BudgetError(
            f"{text!r} is not a dollar amount: write it like 25 or 12.50, or leave it empty "
            "for no cap."
        ) from exc
    if micros < 0:
        raise BudgetError("A monthly budget cannot be negative; leave it empty for no cap.")
    return micros


def as_usd(micros: int | None) -> str | None:
    """A cap as plain dollars ("12.50", "0.000125"), as the API and the form show it."""
    if micros is None:
        return None
    return money.format_usd(micros).lstrip("$").replace(",", "")


def _spent_by_key(
    *, account_id: int, key_ids: Iterable[int] | None, start: datetime, end: datetime
) -> dict[int, int]:
    """Micro-dollars spent in [start, end) (whole days) per key of the account: the daily rollups
    up to the watermark plus the records after it."""
    ids = None if key_ids is None else list(key_ids)
    if ids is not None and not ids:
        return {}
    for _ in range(3):
        mark = _watermark()
        rolled = UsageRollup.objects.filter(
            account_id=account_id,
            granularity=UsageRollup.Granularity.DAY,
            bucket__gte=start,
            bucket__lt=end,
        )
        tail = UsageRecord.objects.filter(
            account_id=account_id, id__gt=mark, created_at__gte=start, created_at__lt=end
        )
        if ids is not None:
            rolled = rolled.filter(key_id__in=ids)
            tail = tail.filter(api_key_id__in=ids)
        out: dict[int, int] = {}
        for key_id, cost in rolled.values_list("key_id").annotate(c=Sum("cost_micros")):
            out[int(key_id)] = out.get(int(key_id), 0) + int(cost or 0)
        for key_id, cost in (
            tail.exclude(api_key_id=None).values_list("api_key_id").annotate(c=Sum("cost_micros"))
        ):
            out[int(key_id)] = out.get(int(key_id), 0) + int(cost or 0)
        if _watermark() == mark:
            return out
    return out


def _watermark() -> int:
    value = (
        RollupWatermark.objects.filter(name=_WATERMARK)
        .values_list("last_record_id", flat=True)
        .first()
    )
    return int(value or 0)


def member_key_ids(*, account_id: int, user_id: int) -> list[int]:
    """The ids of the keys a member made in the organisation (revoked ones too: they spent)."""
    return list(
        ApiKey.objects.filter(account_id=account_id, created_by_id=user_id).values_list(
            "pk", flat=True
        )
    )


def spent_this_month(
    *,
    account_id: int,
    key_id: int,
    member_id: int | None,
    month_start_ms: int,
    month_end_ms: int,
) -> tuple[int, int]:
    """What the key, and the member (a Membership id; None: none), spent in the month, in
    micro-dollars: what the gateway's admission starts from when it has no live copy."""
    start, end = windows.from_ms(month_start_ms), windows.from_ms(month_end_ms)
    membership = Membership.objects.filter(pk=member_id).first() if member_id is not None else None
    member_keys: set[int] = set()
    if membership is not None:
        member_keys = set(
            member_key_ids(account_id=membership.account_id, user_id=membership.user_id)
        )
    spent = _spent_by_key(
        account_id=account_id, key_ids={key_id} | member_keys, start=start, end=end
    )
    return spent.get(key_id, 0), sum(spent.get(k, 0) for k in member_keys)


# --- setting caps ----------------------------------------------------------------------------


def set_member_budget(
    *, membership: Membership, budget_micros: int | None, request: HttpRequest | None = None
) -> Membership:
    """Set (or clear, with None) a member's monthly cap; every key they made learns it at once."""
    if budget_micros is not None and budget_micros < 0:
        raise BudgetError("A monthly budget cannot be negative; leave it empty for no cap.")
    with transaction.atomic():
        row = Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
        before = row.monthly_budget_micros
        if before == budget_micros:
            return row
        row.monthly_budget_micros = budget_micros
        row.save(update_fields=["monthly_budget_micros"])
        audit.record(
            action="member.budget_changed",
            account=row.account_id,
            request=request,
            target=row,
            target_label=row.user.email,
            before={"monthly_budget_micros": before},
            after={"monthly_budget_micros": budget_micros},
        )
        keys.announce_change(
            key_hashes=ApiKey.objects.filter(
                account_id=row.account_id, created_by_id=row.user_id, revoked_at__isnull=True
            ).values_list("key_hash", flat=True)
        )
    return row


def set_key_budget(
    *, key: ApiKey, budget_micros: int | None, request: HttpRequest | None = None
) -> ApiKey:
    """Set (or clear, with None) a key's monthly cap, on every gateway process at once."""
    if budget_micros is not None and budget_micros < 0:
        raise BudgetError("A monthly budget cannot be negative; leave it empty for no cap.")
    with transaction.atomic():
        row = ApiKey.objects.select_for_update().get(pk=key.pk)
        before = row.monthly_budget_micros
        if before == budget_micros:
            return row
        row.monthly_budget_micros = budget_micros
        row.save(update_fields=["monthly_budget_micros"])
        audit.record(
            action="key.limits_changed",
            account=row.account_id,
            request=request,
            target=row,
            before={"monthly_budget_micros": before},
            after={"monthly_budget_micros": budget_micros},
        )
        keys.announce_change(key_hashes=[row.key_hash])
    key.monthly_budget_micros = budget_micros
    return row


# --- the Budgets page ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One member or key on the Budgets page: its cap and what the month spent, in micros."""

    id: int
    label: str
    detail: str
    cap_micros: int | None
    spent_micros: int

    @property
    def percent(self) -> int:
        if self.cap_micros is None:
            return 0
        if self.cap_micros <= 0:
            return 100
        return min(100, self.spent_micros * 100 // self.cap_micros)

    @property
    def spent(self) -> str:
        return money.format_usd(self.spent_micros)

    @property
    def cap(self) -> str:
        return "" if self.cap_micros is None else money.format_usd(self.cap_micros)

    @property
    def cap_input(self) -> str:
        """The cap as the form shows it: plain dollars, no sign or thousands separator."""
        return as_usd(self.cap_micros) or ""


@dataclass(frozen=True, slots=True)
class Overview:
    month_start: datetime
    month_end: datetime
    members: list[Line]
    keys: list[Line]


def overview(*, account: Account, at: datetime | None = None) -> Overview:
    """Every member and live key of the organisation with its cap and month-to-date spend."""
    start, end = windows.month_bounds(at or now())
    by_key = _spent_by_key(account_id=account.pk, key_ids=None, start=start, end=end)
    key_rows = list(
        ApiKey.objects.filter(account=account).values_list(
            "pk", "name", "hint", "created_by_id", "monthly_budget_micros", "revoked_at"
        )
    )
    by_user: dict[int, int] = {}
    for pk, _, _, user_id, _, _ in key_rows:
        if user_id is not None:
            by_user[user_id] = by_user.get(user_id, 0) + by_key.get(pk, 0)
    members = [
        Line(
            id=m.pk,
            label=m.user.email,
            detail=m.get_role_display(),
            cap_micros=m.monthly_budget_micros,
            spent_micros=by_user.get(m.user_id, 0),
        )
        for m in Membership.objects.filter(account=account)
        .select_related("user")
        .order_by("created_at", "id")
    ]
    key_lines = [
        Line(id=pk, label=name, detail=hint, cap_micros=cap, spent_micros=by_key.get(pk, 0))
        for pk, name, hint, _, cap, revoked in key_rows
        if revoked is None
    ]
    return Overview(month_start=start, month_end=end, members=members, keys=key_lines)
