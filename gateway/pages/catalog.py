"""The public model catalog page: every active model, its prices, what it can do and which plans
include it, filtered by the page's GET parameters (static/js/catalog.js repeats the same filters
in the browser, so typing narrows the list without a reload)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

from accounts import orgs
from accounts.models import User
from billing import money
from billing.models import Plan
from gateway.models import CatalogModel, ModelAlias

CAPABILITIES = {
    "tools": ("supports_tools", "Tools"),
    "vision": ("supports_vision", "Vision"),
    "json": ("supports_json", "JSON mode"),
    "thinking": ("supports_thinking", "Thinking"),
    "ultrafast": ("ultrafast", "UltraFast"),
}
SORTS = {"name": "Name", "price": "Input price", "context": "Context window"}
MAX_QUERY_CHARS = 100


@dataclass(frozen=True)
class Filters:
    query: str = ""
    kind: str = ""
    provider: str = ""
    capabilities: tuple[str, ...] = ()
    max_price: str = ""  # as typed, in dollars per 1M input tokens
    max_price_micros: int | None = None
    sort: str = "name"
    # Only the models the signed-in person's plan includes (``available=1``).
    available: bool = False

    @property
    def is_filtering(self) -> bool:
        return bool(
            self.query
            or self.kind
            or self.provider
            or self.capabilities
            or self.max_price
            or self.available
        )


@dataclass(frozen=True)
class Row:
    model: CatalogModel
    input_price: str
    output_price: str
    cached_price: str
    unit_price: str
    capabilities: list[str]
    capability_slugs: list[str]
    plans: list[str]
    search: str
    shown: bool
    # On the signed-in person's plan; None for a visitor.
    available: bool | None = None
    # The model aliases (names and patterns) that may also serve it.
    aliases: tuple[str, ...] = ()


def parse_filters(params: QueryDict, *, providers: list[str]) -> tuple[Filters, str]:
    """The filters a visitor asked for, ignoring values we do not know, and an error message for a
    maximum price that is not a dollar amount."""
    kind = params.get("kind", "")
    provider = params.get("provider", "")
    sort = params.get("sort", "")
    max_price = params.get("max_price", "").strip()[:20]
    max_price_micros: int | None = None
    error = ""
    if max_price:
        try:
            max_price_micros = money.from_dollars(max_price)
        except ValueError:
            max_price_micros = None
        if max_price_micros is None or max_price_micros < 0:
            max_price_micros = None
            error = "Enter a price in dollars, like 0.50."
    filters = Filters(
        query=" ".join(params.get("q", "").split())[:MAX_QUERY_CHARS],
        kind=kind if kind in CatalogModel.Kind.values else "",
        provider=provider if provider in providers else "",
        capabilities=tuple(slug for slug in CAPABILITIES if slug in params.getlist("cap")),
        max_price=max_price if max_price_micros is not None else "",
        max_price_micros=max_price_micros,
        sort=sort if sort in SORTS else "name",
        available=params.get("available", "") == "1",
    )
    return filters, error


def search_text(model: CatalogModel) -> str:
    return " ".join(
        (model.display_name, model.model_id, model.owned_by, model.description)
    ).casefold()


def matches(model: CatalogModel, filters: Filters) -> bool:
    """Whether a model passes every filter: each word of the query appears in its name, id, lab or
    description; a maximum price keeps only models priced per input token at or under it."""
    haystack = search_text(model)
    if any(word not in haystack for word in filters.query.casefold().split()):
        return False
    if filters.kind and model.kind != filters.kind:
        return False
    if filters.provider and model.owned_by != filters.provider:
        return False
    if any(not getattr(model, CAPABILITIES[slug][0]) for slug in filters.capabilities):
        return False
    if filters.max_price_micros is not None:
        price = model.input_price_micros
        if model.unit != CatalogModel.Unit.TOKENS or price is None:
            return False
        if price > filters.max_price_micros:
            return False
    return True


def _sort_key(sort: str) -> Any:
    def by_name(model: CatalogModel) -> tuple[str, str]:
        return (model.display_name.casefold(), model.model_id)

    if sort == "price":
        return lambda m: (
            m.unit != CatalogModel.Unit.TOKENS or m.input_price_micros is None,
            m.input_price_micros or 0,
            by_name(m),
        )
    if sort == "context":
        return lambda m: (-m.context_window, by_name(m))
    return by_name


def _unit_price(model: CatalogModel) -> str:
    if model.unit == CatalogModel.Unit.TOKENS:
        return ""
    if model.unit_price_micros is None:
        return "—"
    return f"{money.format_usd(model.unit_price_micros)} {model.get_unit_display()}"


def _row(model: CatalogModel, *, plans: list[str], shown: bool) -> Row:
    capability_slugs = [slug for slug, (field, _) in CAPABILITIES.items() if getattr(model, field)]
    return Row(
        model=model,
        input_price=money.format_price_per_million(model.input_price_micros),
        output_price=money.format_price_per_million(model.output_price_micros),
        cached_price=money.format_price_per_million(model.cached_input_price_micros),
        unit_price=_unit_price(model),
        capabilities=[CAPABILITIES[slug][1] for slug in capability_slugs],
        capability_slugs=capability_slugs,
        plans=plans,
        search=search_text(model),
        shown=shown,
        aliases=tuple(a.name for a in model.aliases.all()),
    )


def catalog_page(request: HttpRequest) -> HttpResponse:
    # Three queries in all: the active models, their aliases and the public plans. Every model
    # is rendered, the ones filtered out hidden, so the browser can widen the filters again
    # without a request.
    aliases = Prefetch("aliases", queryset=ModelAlias.objects.filter(is_active=True))
    models = list(CatalogModel.objects.filter(is_active=True).prefetch_related(aliases))
    public_plans = list(Plan.objects.filter(is_public=True))
    providers = sorted({m.owned_by for m in models}, key=str.casefold)
    filters, price_error = parse_filters(request.GET, providers=providers)
    plan = orgs.current_membership(request).account.plan if isinstance(request.user, User) else None
    if plan is None:
        filters = replace(filters, available=False)

    plans_by_tier: dict[str, list[str]] = {}
    for tier in {m.tier for m in models}:
        plans_by_tier[tier] = [plan.name for plan in public_plans if plan.allows_tier(tier)]

    entries = []
    for model in sorted(models, key=_sort_key(filters.sort)):
        on_plan = plan.allows_tier(model.tier) if plan is not None else None
        shown = matches(model, filters) and (on_plan is not False or not filters.available)
        row = _row(model, plans=plans_by_tier[model.tier], shown=shown)
        entries.append(replace(row, available=on_plan))
    context: dict[str, Any] = {
        "entries": entries,
        "rows": [entry for entry in entries if entry.shown],
        "total": len(entries),
        "filters": filters,
        "price_error": price_error,
        "kinds": CatalogModel.Kind.choices,
        "providers": providers,
        "capabilities": [(slug, label) for slug, (_, label) in CAPABILITIES.items()],
        "sorts": list(SORTS.items()),
        "plan": plan,
        "on_plan": sum(1 for entry in entries if entry.available),
    }
    return render(request, "gateway/catalog.html", context)
