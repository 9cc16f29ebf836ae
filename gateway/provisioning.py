"""The operator's toolkit behind ``addprovider``, ``importmodels`` and ``checkproviders``: add a
provider from a preset, read an upstream's model list into the catalog (priced from a table, or
left unpriced, which the gateway refuses to serve), and make one real minimal call to each
provider. Upstream calls go through the same provider adapters the gateway uses."""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from billing import money
from gateway import catalog, presets, providers
from gateway.catalog import RouteInfo
from gateway.models import CatalogModel, Provider, Route
from gateway.providers import bedrock
from gateway.providers.base import close_http_client

LIST_TIMEOUT_S = 30.0


def add_provider(
    *,
    preset: str,
    base_url: str = "",
    api_key_env: str = "",
    slug: str = "",
    name: str = "",
    **values: str,
) -> Provider:
    """A new provider filled from ``preset`` (``values``: what its URL template needs)."""
    found = presets.get(preset)
    provider = Provider(name=name or found.name, is_active=True, api_key_env=api_key_env)
    presets.apply(provider, found, base_url=base_url, **values)
    provider.slug = slug or _free_slug(slugify(found.key.replace(".", "-")) or "provider")
    if Provider.objects.filter(slug=provider.slug).exists():
        raise ValueError(f"a provider with the slug {provider.slug!r} exists already")
    provider.full_clean()
    provider.save()
    catalog.invalidate()
    return provider


def _free_slug(base: str) -> str:
    slug, n = base, 2
    while Provider.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def route_info(provider: Provider, upstream_model: str = "") -> RouteInfo:
    """How the gateway would reach ``provider`` (as a route to ``upstream_model``)."""
    return RouteInfo(
        route_id=0,
        provider_slug=provider.slug,
        protocol=provider.protocol,
        base_url=provider.base_url.rstrip("/"),
        api_key=provider.resolve_api_key(),
        upstream_model=upstream_model,
        priority=0,
        weight=1,
        connect_timeout_s=(provider.connect_timeout_ms or settings.GATEWAY_CONNECT_TIMEOUT_MS)
        / 1000,
        first_byte_timeout_s=(
            provider.first_byte_timeout_ms or settings.GATEWAY_FIRST_BYTE_TIMEOUT_MS
        )
        / 1000,
        total_timeout_s=(provider.total_timeout_ms or settings.GATEWAY_TOTAL_TIMEOUT_MS) / 1000,
        preset=provider.preset,
        auth_style=provider.auth_style,
        url_style=provider.url_style,
        api_version=provider.api_version,
        region=provider.region,
        output_limit_field=provider.output_limit_field,
        reports_stream_usage=provider.reports_stream_usage,
        tokenizer=provider.tokenizer,
        tokenizer_url=provider.tokenizer_url,
        request_id_header=provider.request_id_header.lower(),
        forward_headers=tuple(str(h).lower() for h in provider.forward_headers or ()),
        extra_headers=tuple(
            (str(k).lower(), str(v)) for k, v in (provider.extra_headers or {}).items()
        ),
    )


# --- the upstream's model list ----------------------------------------------------------------


class ListingError(Exception):
    pass


def _models_path(provider: Provider) -> str:
    if provider.preset in presets.PRESETS:
        return presets.PRESETS[provider.preset].models_path
    if provider.url_style == Provider.UrlStyle.AZURE:
        return ""
    return "/v1/models" if provider.protocol == Provider.Protocol.ANTHROPIC else "/models"


def _get(url: str, headers: dict[str, str]) -> Any:
    try:
        response = httpx.get(url, headers=headers, timeout=LIST_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ListingError(f"could not reach {url}: {type(exc).__name__}") from exc
    if response.status_code >= 300:
        raise ListingError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ListingError(f"{url} did not answer JSON") from exc


def upstream_models(provider: Provider) -> list[str]:
    """The model ids the upstream lists: OpenAI-style ``GET /models``, Anthropic's paginated
    ``GET /v1/models``, Ollama's ``GET /api/tags``, Bedrock's ListFoundationModels (text
    models invocable on demand)."""
    route = route_info(provider)
    if provider.protocol == Provider.Protocol.BEDROCK:
        return _bedrock_models(route)
    path = _models_path(provider)
    if not path:
        raise ListingError(
            f"{provider.slug}: this kind of provider does not list its models "
            "(Azure OpenAI deployments); add routes in the admin"
        )
    adapter = providers.get(provider.protocol)
    headers = adapter.headers(route, {})
    if path == "/api/tags":  # Ollama's own list, at the server root
        root = route.base_url.removesuffix("/v1")
        data = _get(root + path, headers)
        return sorted(str(m.get("name") or m.get("model")) for m in data.get("models") or ())
    ids: list[str] = []
    url = route.base_url + path
    params = "?limit=1000" if provider.protocol == Provider.Protocol.ANTHROPIC else ""
    while True:
        data = _get(url + params, headers)
        for item in data.get("data") or ():
            ids.append(str(item.get("id")).removeprefix("models/"))
        if not (data.get("has_more") and data.get("last_id")):
            break
        params = f"?limit=1000&after_id={data['last_id']}"
    return sorted(set(ids))


def _bedrock_models(route: RouteInfo) -> list[str]:
    host = urlsplit(route.base_url).netloc.replace("bedrock-runtime.", "bedrock.", 1)
    scheme = urlsplit(route.base_url).scheme
    url = f"{scheme}://{host}/foundation-models?byOutputModality=TEXT&byInferenceType=ON_DEMAND"
    try:
        headers = bedrock.auth_headers(route, "GET", url, b"", {"accept": "application/json"})
    except providers.UpstreamError as exc:
        raise ListingError(exc.message) from exc
    data = _get(url, {"accept": "application/json", **headers})
    return sorted(
        str(m["modelId"])
        for m in data.get("modelSummaries") or ()
        if m.get("modelId") and "TEXT" in (m.get("outputModalities") or ["TEXT"])
    )


# --- prices -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    input_micros: int
    output_micros: int


def read_prices(text: str, *, filename: str = "") -> dict[str, Price]:
    """A price table: JSON ``{"model": {"input": "2.50", "output": "10"}}`` or CSV with the
    columns ``model,input,output``; USD per 1M tokens, parsed to micro-dollars."""
    rows: Iterable[tuple[str, Any, Any]]
    if filename.endswith(".json") or text.lstrip().startswith("{"):
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a JSON price table is an object of model id -> {input, output}")
        rows = [(k, (v or {}).get("input"), (v or {}).get("output")) for k, v in data.items()]
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"model", "input", "output"} - set(reader.fieldnames or ())
        if missing:
            names = ", ".join(sorted(missing))
            raise ValueError(f"the CSV price table lacks the column(s) {names}")
        rows = [(r["model"], r["input"], r["output"]) for r in reader]
    out: dict[str, Price] = {}
    for model_id, given_in, given_out in rows:
        if given_in is None or given_out is None:
            raise ValueError(f"{model_id}: both input and output prices are needed")
        try:
            price = Price(_usd(given_in), _usd(given_out))
        except ValueError as exc:
            raise ValueError(f"{model_id}: {exc}") from exc
        if price.input_micros < 0 or price.output_micros < 0:
            raise ValueError(f"{model_id}: prices cannot be negative")
        out[str(model_id).strip()] = price
    return out


def _usd(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a dollar amount: {value!r}")
    # A JSON number is read as written (repr of a float is its shortest exact spelling).
    return money.from_dollars(repr(value) if isinstance(value, float) else value)


# --- importing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    model_id: str
    action: str  # "created", "route added", "exists"
    priced: bool


def import_models(
    *,
    provider: Provider,
    model_ids: Iterable[str],
    prices: dict[str, Price] | None = None,
    only: str = "",
) -> list[Imported]:
    """Catalog models (public id = the upstream's id) routed to ``provider``. New models take
    their price from ``prices``, or stay unpriced (refused until an operator prices them);
    existing models keep theirs and get a route to this provider if they had none."""
    prices = prices or {}
    out: list[Imported] = []
    with transaction.atomic():
        for model_id in model_ids:
            if only and not fnmatch.fnmatchcase(model_id, only):
                continue
            price = prices.get(model_id)
            model, created = CatalogModel.objects.get_or_create(
                model_id=model_id,
                defaults={
                    "display_name": model_id,
                    "owned_by": provider.name,
                    "input_price_micros": price.input_micros if price else None,
                    "output_price_micros": price.output_micros if price else None,
                },
            )
            _, routed = Route.objects.get_or_create(
                model=model, provider=provider, upstream_model=model_id
            )
            action = "created" if created else "route added" if routed else "exists"
            out.append(Imported(model_id, action, model.is_priced))
    catalog.invalidate()
    return out


# --- checking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    slug: str
    ok: bool
    status: int | None
    latency_ms: int
    model: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.slug,
            "ok": self.ok,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "model": self.model,
            "detail": self.detail,
        }


def _ping_body(route: RouteInfo) -> bytes:
    body: dict[str, Any] = {
        "model": route.upstream_model,
        "messages": [{"role": "user", "content": "ping"}],
    }
    if providers.wire_protocol(route.protocol) == Provider.Protocol.ANTHROPIC:
        body["max_tokens"] = 1
    else:
        field = route.output_limit_field
        for name in ("max_tokens", "max_completion_tokens"):
            if field in (name, Provider.OutputLimitField.BOTH):
                body[name] = 1
    return orjson.dumps(body)


def check_targets(slug: str = "") -> list[tuple[Provider, str]]:
    """Each active provider (or the one named) with the upstream model of one active route."""
    queryset = Provider.objects.filter(is_active=True).order_by("slug")
    if slug:
        queryset = Provider.objects.filter(slug=slug)
    out = []
    for provider in queryset:
        route = (
            Route.objects.filter(provider=provider, is_active=True, model__is_active=True)
            .order_by("priority", "id")
            .first()
        )
        out.append((provider, route.upstream_model if route else ""))
    return out


async def _check(provider: Provider, upstream_model: str) -> Check:
    started = time.monotonic()

    def done(ok: bool, status: int | None, detail: str) -> Check:
        elapsed = round((time.monotonic() - started) * 1000)
        return Check(provider.slug, ok, status, elapsed, upstream_model, detail)

    if not upstream_model:
        return done(False, None, "no active route: nothing to call")
    route = route_info(provider, upstream_model)
    adapter = providers.get(route.protocol)
    try:
        request = adapter.build(route, "chat", _ping_body(route), {})
        response = await adapter.send(request, stream=False)
    except providers.UpstreamError as exc:
        return done(False, exc.status, exc.message or "failed")
    except Exception as exc:  # a broken configuration reads as a failed check, not a crash
        return done(False, None, f"{type(exc).__name__}: {exc}")
    return done(True, response.status_code, "ok")


def check_providers(targets: list[tuple[Provider, str]]) -> list[Check]:
    """One real minimal chat call (one output token) per provider, concurrently."""

    async def run() -> list[Check]:
        try:
            return list(await asyncio.gather(*(_check(p, m) for p, m in targets)))
        finally:
            await close_http_client()

    return asyncio.run(run())
