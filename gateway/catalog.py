"""The model catalog as the hot path sees it: an in-process snapshot of models and their routes,
refreshed every few seconds, plus seeding the embedded catalog that routes to the simulator."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

from gateway import crypto, store
from gateway.catalog_seed import ALIASES, MODELS
from gateway.models import CatalogModel, ModelAlias, Provider, Route
from tokenfactory.db import reconnecting


@dataclass(frozen=True, slots=True)
class RouteInfo:
    route_id: int
    provider_slug: str
    protocol: str
    base_url: str
    api_key: str
    upstream_model: str
    priority: int
    weight: int
    connect_timeout_s: float
    first_byte_timeout_s: float
    total_timeout_s: float
    # How to talk to this provider (gateway.models.Provider; filled by a preset).
    preset: str = ""
    auth_style: str = ""
    url_style: str = "standard"
    api_version: str = ""
    region: str = ""
    output_limit_field: str = "max_tokens"
    reports_stream_usage: bool = True
    tokenizer: str = ""
    tokenizer_url: str = ""
    request_id_header: str = ""
    forward_headers: tuple[str, ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: str
    display_name: str
    owned_by: str
    kind: str
    tier: str
    supports_tools: bool
    supports_vision: bool
    supports_json: bool
    supports_thinking: bool
    context_window: int
    max_output_tokens: int
    input_price_micros: int | None
    output_price_micros: int | None
    cached_input_price_micros: int | None
    unit: str
    unit_price_micros: int | None
    ultrafast: bool
    is_priced: bool
    created: int
    routes: tuple[RouteInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class AliasInfo:
    """One active ``ModelAlias``: ``pattern`` is None for an exact name."""

    name: str
    model_id: str
    priority: int
    pattern: re.Pattern[str] | None
    literal: int  # how many characters of the name are not wildcards (more: more specific)


@dataclass(frozen=True, slots=True)
class Snapshot:
    models: dict[str, ModelInfo]
    ordered: tuple[ModelInfo, ...]
    loaded_at: float
    # Exact aliases by name, each name's aliases best first; patterns, most specific first.
    exact_aliases: dict[str, tuple[AliasInfo, ...]] = field(default_factory=dict)
    pattern_aliases: tuple[AliasInfo, ...] = ()
    # What ``candidates`` found for a name, kept for the snapshot's life (bounded).
    found: dict[str, tuple[ModelInfo, ...]] = field(default_factory=dict)


# How many distinct names a snapshot remembers the candidates of (names are what callers send).
_FOUND_MAX = 4096
# What clients append to a model id (Claude Code's "[1m]" for the 1M-token context variant).
_SUFFIX = re.compile(r"(?:\s*\[[^\[\]]*\])+\s*$")


def base_name(name: str) -> str:
    """``name`` without the bracketed suffixes clients append: ``claude-opus-4-8[1m]`` ->
    ``claude-opus-4-8``."""
    if not name.endswith("]"):
        return name
    return _SUFFIX.sub("", name)


def is_pattern(name: str) -> bool:
    return "*" in name or "?" in name


def compile_pattern(name: str) -> re.Pattern[str]:
    """A glob with ``*`` (any run of characters) and ``?`` (one character); nothing else is
    special, so ``[`` and ``.`` in a name match themselves."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in name)
    return re.compile("".join(parts), re.DOTALL)


def alias_info(*, name: str, model_id: str, priority: int) -> AliasInfo:
    pattern = compile_pattern(name) if is_pattern(name) else None
    literal = len(name) - name.count("*") - name.count("?")
    return AliasInfo(
        name=name, model_id=model_id, priority=priority, pattern=pattern, literal=literal
    )


def candidates(snap: Snapshot, name: str) -> tuple[ModelInfo, ...]:
    """The active catalog models ``name`` may mean, best first: the model with that id (also
    once a client's ``[...]`` suffix is stripped) alone; else every matching alias's model,
    exact aliases first, then patterns with the longest literal part first, then by priority.
    The pipeline serves the first one the caller may use. No database query: the snapshot's."""
    found = snap.found.get(name)
    if found is not None:
        return found
    base = base_name(name)
    model = snap.models.get(name) or snap.models.get(base)
    if model is not None:
        found = (model,)
    else:
        matches = [*snap.exact_aliases.get(base, ())]
        matches += [a for a in snap.pattern_aliases if a.pattern and a.pattern.fullmatch(base)]
        seen: dict[str, ModelInfo] = {}
        for alias in matches:
            target = snap.models.get(alias.model_id)
            if target is not None and alias.model_id not in seen:
                seen[alias.model_id] = target
        found = tuple(seen.values())
    if len(snap.found) < _FOUND_MAX:
        snap.found[name] = found
    return found


_snapshot: Snapshot | None = None
_lock: asyncio.Lock | None = None


def _seconds(ms: int | None, default_ms: int) -> float:
    return (ms if ms else default_ms) / 1000


@reconnecting
def load() -> Snapshot:
    routes_by_model: dict[int, list[RouteInfo]] = {}
    # Each provider read once: its stored API key is decrypted once per load, not per route.
    providers = {p.pk: p for p in Provider.objects.filter(is_active=True)}
    queryset = Route.objects.filter(is_active=True, provider_id__in=list(providers))
    for route in queryset.order_by("priority", "-weight", "id"):
        prov = providers[route.provider_id]
        routes_by_model.setdefault(route.model_id, []).append(
            RouteInfo(
                route_id=route.pk,
                provider_slug=prov.slug,
                protocol=prov.protocol,
                base_url=prov.base_url.rstrip("/"),
                api_key=prov.resolve_api_key(),
                upstream_model=route.upstream_model,
                priority=route.priority,
                weight=route.weight,
                connect_timeout_s=_seconds(
                    prov.connect_timeout_ms, settings.GATEWAY_CONNECT_TIMEOUT_MS
                ),
                first_byte_timeout_s=_seconds(
                    route.first_byte_timeout_ms or prov.first_byte_timeout_ms,
                    settings.GATEWAY_FIRST_BYTE_TIMEOUT_MS,
                ),
                total_timeout_s=_seconds(prov.total_timeout_ms, settings.GATEWAY_TOTAL_TIMEOUT_MS),
                preset=prov.preset,
                auth_style=prov.auth_style,
                url_style=prov.url_style,
                api_version=prov.api_version,
                region=prov.region,
                output_limit_field=prov.output_limit_field,
                reports_stream_usage=prov.reports_stream_usage,
                tokenizer=prov.tokenizer,
                tokenizer_url=prov.tokenizer_url.rstrip("/"),
                request_id_header=prov.request_id_header.lower(),
                forward_headers=tuple(str(h).lower() for h in prov.forward_headers or ()),
                extra_headers=tuple(
                    (str(k).lower(), str(v)) for k, v in (prov.extra_headers or {}).items()
                ),
            )
        )
    models: dict[str, ModelInfo] = {}
    for row in CatalogModel.objects.filter(is_active=True).order_by("model_id"):
        models[row.model_id] = ModelInfo(
            model_id=row.model_id,
            display_name=row.display_name,
            owned_by=row.owned_by,
            kind=row.kind,
            tier=row.tier,
            supports_tools=row.supports_tools,
            supports_vision=row.supports_vision,
            supports_json=row.supports_json,
            supports_thinking=row.supports_thinking,
            context_window=row.context_window,
            max_output_tokens=row.max_output_tokens,
            input_price_micros=row.input_price_micros,
            output_price_micros=row.output_price_micros,
            cached_input_price_micros=row.cached_input_price_micros,
            unit=row.unit,
            unit_price_micros=row.unit_price_micros,
            ultrafast=row.ultrafast,
            is_priced=row.is_priced,
            created=int(row.created_at.timestamp()),
            routes=tuple(routes_by_model.get(row.pk, ())),
        )
    exact: dict[str, list[AliasInfo]] = {}
    patterns: list[AliasInfo] = []
    aliases = ModelAlias.objects.filter(is_active=True, model__is_active=True)
    for name, model_id, priority in aliases.values_list("name", "model__model_id", "priority"):
        alias = alias_info(name=name, model_id=model_id, priority=priority)
        if alias.pattern is None:
            exact.setdefault(name, []).append(alias)
        else:
            patterns.append(alias)
    patterns.sort(key=lambda a: (-a.literal, a.priority, a.name, a.model_id))
    return Snapshot(
        models=models,
        ordered=tuple(models.values()),
        loaded_at=time.monotonic(),
        exact_aliases={
            name: tuple(sorted(group, key=lambda a: (a.priority, a.model_id)))
            for name, group in exact.items()
        },
        pattern_aliases=tuple(patterns),
    )


log = logging.getLogger(__name__)
VERSION_KEY = "tf:catalog:version"
_CHECK_EVERY_S = 1.0
_checked_at = 0.0
_seen_version: bytes | str | None = None


async def _changed_elsewhere() -> bool:
    """True when another process edited the catalog since this one loaded it: one Redis GET at
    most once a second, so an operator's edit applies everywhere at once, not after the TTL."""
    global _checked_at, _seen_version
    redis = store.client()
    now = time.monotonic()
    if redis is None or now - _checked_at < _CHECK_EVERY_S:
        return False
    _checked_at = now
    try:
        version = await redis.get(VERSION_KEY)
    except RedisError:
        return False
    if version == _seen_version:
        return False
    _seen_version = version
    return True


def _fresh(current: Snapshot | None) -> bool:
    return (
        current is not None
        and time.monotonic() - current.loaded_at < settings.GATEWAY_CATALOG_CACHE_SECONDS
    )


async def snapshot() -> Snapshot:
    """The current catalog, reloaded at most every GATEWAY_CATALOG_CACHE_SECONDS, or at once when
    another process says it changed."""
    global _snapshot, _lock
    current = _snapshot
    if current is not None and _fresh(current) and not await _changed_elsewhere():
        return current
    if current is not None and _fresh(current):
        _snapshot = None  # another process changed the catalog
    if _lock is None:
        _lock = asyncio.Lock()
    try:
        async with _lock:
            current = _snapshot
            if current is None or not _fresh(current):
                current = await sync_to_async(load, thread_sensitive=False)()
                _snapshot = current
    except RuntimeError:
        # The lock belongs to another event loop (tests run several); load without it.
        current = await sync_to_async(load, thread_sensitive=False)()
        _snapshot = current
    return current


def invalidate() -> None:
    """Drop the catalog here and tell every other process to reload it."""
    clear()
    redis = store.sync_client()
    if redis is not None:
        try:
            redis.incr(VERSION_KEY)
        except RedisError:
            log.warning("catalog.invalidate_failed", exc_info=True)


def clear() -> None:
    global _snapshot, _lock
    _snapshot = None
    _lock = None


def seed(*, simulator_url: str | None = None) -> dict[str, int]:
    """Load the bundled catalog (gateway.catalog_seed), every model routed to the simulator, and
    its model aliases.

    Idempotent: existing models, providers, routes and aliases are left as an operator edited
    them (a seeded alias the operator deleted comes back; deactivate it instead)."""
    base = (simulator_url or settings.SIMULATOR_URL).rstrip("/")
    counts = {"providers": 0, "models": 0, "routes": 0, "aliases": 0}
    with transaction.atomic():
        providers: dict[str, Provider] = {}
        for protocol, url in (("openai", f"{base}/v1"), ("anthropic", base)):
            prov, created = Provider.objects.get_or_create(
                slug=f"simulator-{protocol}",
                defaults={
                    "name": f"Simulator ({protocol})",
                    "protocol": protocol,
                    "base_url": url,
                    "api_key": "simulator",
                    "preset": "simulator",
                    "request_id_header": "x-request-id",
                    "forward_headers": ["x-sim-options"],
                },
            )
            providers[protocol] = prov
            counts["providers"] += created
        fields = {f.name for f in CatalogModel._meta.get_fields()}
        for spec in MODELS:
            data: dict[str, Any] = {
                k: v for k, v in spec.items() if k in fields and k != "model_id"
            }
            model, created = CatalogModel.objects.get_or_create(
                model_id=spec["model_id"], defaults=data
            )
            counts["models"] += created
            if created:
                protocol = str(spec.get("upstream_protocol", "openai"))
                _, route_created = Route.objects.get_or_create(
                    model=model, provider=providers[protocol], upstream_model=model.model_id
                )
                counts["routes"] += route_created
        for name, model_id, priority in ALIASES:
            target = CatalogModel.objects.filter(model_id=model_id).first()
            if target is not None:
                _, created = ModelAlias.objects.get_or_create(
                    name=name, model=target, defaults={"priority": priority}
                )
                counts["aliases"] += created
    invalidate()
    return counts


def rotate_api_keys() -> int:
    """Re-encrypt every stored upstream API key with the first configured key (``rotatekeys``);
    all or none: UndecryptableKey when one cannot be read. Returns how many were re-encrypted."""
    count = 0
    with transaction.atomic():
        for provider in Provider.objects.select_for_update().exclude(api_key="").order_by("pk"):
            # Read: decrypted with whichever key opens it; written: encrypted with the first.
            Provider.objects.filter(pk=provider.pk).update(api_key=provider.api_key)
            count += 1
    return count


def undecryptable_providers() -> list[str]:
    """The slugs of providers whose stored API key no configured key decrypts."""
    failing = []
    for pk, slug in Provider.objects.exclude(api_key="").order_by("slug").values_list("pk", "slug"):
        try:
            Provider.objects.filter(pk=pk).values_list("api_key", flat=True).get()
        except crypto.UndecryptableKey:
            failing.append(slug)
    return failing
