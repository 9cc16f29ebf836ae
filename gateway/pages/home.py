"""The signed-in home page: this month's spend, the token window used, requests and errors with
a 7-day sparkline, the last requests, the plan's limits and how to make a first call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.timezone import now

from accounts import orgs
from accounts.forms import models_for
from accounts.models import Account
from accounts.orgs import requires
from accounts.roles import Perm
from accounts.views import window_text
from gateway import activity, usage

DEFAULT_SNIPPET_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
SPARK_WIDTH = 140
SPARK_HEIGHT = 36


@dataclass(frozen=True)
class Sparkline:
    """Requests per day over the last 7 days, as an SVG the page draws without JavaScript."""

    days: list[str]
    counts: list[int]
    bars: list[dict[str, float]]
    width: int = SPARK_WIDTH
    height: int = SPARK_HEIGHT

    @property
    def label(self) -> str:
        listed = ", ".join(f"{d}: {c:,}" for d, c in zip(self.days, self.counts, strict=True))
        return f"Requests per day, last 7 days: {listed}"


def sparkline(rep: usage.Report) -> Sparkline:
    start = rep.start.date()
    days = [start + timedelta(days=n) for n in range(7)]
    counts = dict.fromkeys(days, 0)
    for b in rep.buckets:
        if b.day in counts:
            counts[b.day] += b.totals.requests
    values = [counts[d] for d in days]
    top = max(values) or 1
    gap = 4.0
    width = (SPARK_WIDTH - gap * 6) / 7
    bars = []
    for n, value in enumerate(values):
        # An empty day keeps a 2 px stub so the week's shape reads at a glance.
        height = max(2.0, (SPARK_HEIGHT - 2) * value / top)
        bars.append(
            {
                "x": round(n * (width + gap), 2),
                "y": round(SPARK_HEIGHT - height, 2),
                "w": round(width, 2),
                "h": round(height, 2),
            }
        )
    return Sparkline(days=[d.strftime("%a %-d %b") for d in days], counts=values, bars=bars)


def _snippet_model(account: Account) -> str:
    chat = [m for m in models_for(account.plan) if m.kind == "chat"]
    if DEFAULT_SNIPPET_MODEL in {m.model_id for m in chat} or not chat:
        return DEFAULT_SNIPPET_MODEL
    return chat[0].model_id


def _window(meter: dict[str, Any]) -> dict[str, Any] | None:
    cap = meter["window_tokens"]
    remaining = meter["window_remaining_tokens"]
    if cap is None or remaining is None:
        return None
    used = max(0, cap - remaining)
    return {"used": used, "cap": cap, "percent": min(100, round(100 * used / cap)) if cap else 0}


@requires(Perm.DASHBOARD)
def home(request: HttpRequest) -> HttpResponse:
    """The organisation's figures, or with USAGE_OWN alone (a developer) their own keys'."""
    membership = orgs.current_membership(request)
    account = membership.account
    key_ids = orgs.usage_key_ids(membership)
    at = now()
    month = usage.period_range("month", at=at)
    this_month = usage.report(
        account_id=account.pk, start=month.start, end=month.end, key_ids=key_ids
    )
    week = usage.period_range("week", at=at)
    by_day = usage.report(
        account_id=account.pk, start=week.start, end=week.end, group_by=["day"], key_ids=key_ids
    )
    meter = usage.meter_state(account.pk, at=at)
    totals = this_month.totals
    context: dict[str, Any] = {
        "account": account,
        "plan": account.plan,
        "window_text": window_text(account.plan),
        "window": _window(meter),
        "meter": meter,
        "month": this_month,
        "totals": totals,
        "error_rate": round(100 * totals.errors / totals.requests, 1) if totals.requests else 0,
        "spark": sparkline(by_day),
        "recent": activity.recent(
            account_id=account.pk, key_ids=None if key_ids is None else tuple(key_ids)
        ),
        "active_keys": sum(1 for k in orgs.keys_for(membership) if k.is_usable),
        "own_usage_only": key_ids is not None,
        "snippet_model": _snippet_model(account),
    }
    return render(request, "gateway/home.html", context)
