"""The public model catalog page: every active model, its prices and what it can do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.models import Plan
from billing.money import format_price_per_million, format_usd
from gateway.models import CatalogModel

CAPABILITIES = {
    "tools": ("supports_tools", "Tools"),
    "vision": ("supports_vision", "Vision"),
    "json": ("supports_json", "JSON mode"),
    "thinking": ("supports_thinking", "Thinking"),
    "ultrafast": ("ultrafast", "UltraFast"),
}


@dataclass(frozen=True)
class Row:
    model: CatalogModel
    input_price: str
    output_price: str
    cached_price: str
    unit_price: str
    capabilities: list[str]
    plans: list[str]


def _row(model: CatalogModel, plans: list[Plan]) -> Row:
    unit_price = ""
    if model.unit != CatalogModel.Unit.TOKENS:
        unit_price = (
            "—"
            if model.unit_price_micros is None
            else f"{format_usd(model.unit_price_micros)} {model.get_unit_display()}"
        )
    return Row(
        model=model,
        input_price=format_price_per_million(model.input_price_micros),
        output_price=format_price_per_million(model.output_price_micros),
        cached_price=format_price_per_million(model.cached_input_price_micros),
        unit_price=unit_price,
        capabilities=[
            label for field, label in CAPABILITIES.values() if getattr(model, field, False)
        ],
        plans=[plan.name for plan in plans if plan.allows_tier(model.tier)],
    )


def catalog(request: HttpRequest) -> HttpResponse:
    kind = request.GET.get("kind", "")
    wanted = [c for c in request.GET.getlist("cap") if c in CAPABILITIES]
    query = request.GET.get("q", "").strip()[:100]
    models = CatalogModel.objects.filter(is_active=True)
    if kind in CatalogModel.Kind.values:
        models = models.filter(kind=kind)
    else:
        kind = ""
    for cap in wanted:
        models = models.filter(**{CAPABILITIES[cap][0]: True})
    if query:
        models = models.filter(
            Q(model_id__icontains=query)
            | Q(display_name__icontains=query)
            | Q(owned_by__icontains=query)
        )
    plans = list(Plan.objects.filter(is_public=True))
    rows = [_row(model, plans) for model in models.order_by("kind", "owned_by", "model_id")]
    context: dict[str, Any] = {
        "rows": rows,
        "kinds": CatalogModel.Kind.choices,
        "kind": kind,
        "capabilities": [(slug, label) for slug, (_, label) in CAPABILITIES.items()],
        "wanted": wanted,
        "query": query,
        "total": CatalogModel.objects.filter(is_active=True).count(),
    }
    return render(request, "gateway/catalog.html", context)
