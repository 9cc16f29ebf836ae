"""Prometheus metrics (``prometheus-client``) and the ``/metrics`` endpoint. Operational numbers
only: what a request used and cost is metering's (gateway/metering.py).

A request is observed once, when it settles (``observe``, called by ``exchange.settle``): its
count, latency and time to first token by surface, model, provider and status, and its limiter
decision; nothing per chunk. Upstream failures and retries are counted where they happen
(``routing``), which is off the hot path. The metering backlog is read when ``/metrics`` is
scraped. Model labels come from the catalog only (an unresolved model is "unknown"), so a caller
cannot grow the label set.

With several uvicorn workers, ``manage.py serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at an
emptied directory before the workers start; each worker then writes its values to files there
(the library's multiprocess mode) and any worker's ``/metrics`` adds them all up.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import metering

if TYPE_CHECKING:
    from gateway.catalog import RouteInfo
    from gateway.exchange import Exchange

logger = logging.getLogger("tokenfactory.metrics")
# The library decides its mode from this variable when it is first imported; so does this module.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
PATH = "/metrics"

disable_created_metrics()  # type: ignore[no-untyped-call]
_registry = CollectorRegistry()  # the values, when this process is the only one
_LABELS = ("surface", "model", "provider", "status")
# Seconds; a chat answer takes from tens of milliseconds (a cache, a refusal) to minutes.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "tokenfactory_requests",
    "Requests settled, by surface (openai, anthropic, batch), model, provider and status.",
    _LABELS,
    registry=_registry,
)
LATENCY = Histogram(
    "tokenfactory_request_duration_seconds",
    "From the first byte in to the request's settlement (a stream's end).",
    _LABELS,
    buckets=_LATENCY_BUCKETS,
    registry=_registry,
)
TTFT = Histogram(
    "tokenfactory_time_to_first_token_seconds",
    "From the first byte in to the first answer byte out (a whole non-streamed answer).",
    _LABELS,
    buckets=_TTFT_BUCKETS,
    registry=_registry,
)
UPSTREAM_ERRORS = Counter(
    "tokenfactory_upstream_errors",
    "Failed upstream attempts, by provider and kind (the HTTP status; 'network' when none "
    "came back; 'stream' when a stream broke off after it started).",
    ("provider", "kind"),
    registry=_registry,
)
RETRIES = Counter(
    "tokenfactory_upstream_retries",
    "Upstream attempts after a request's first, by the provider tried.",
    ("provider",),
    registry=_registry,
)
LIMITER = Counter(
    "tokenfactory_limiter_decisions",
    "Admission decisions: admit, or refuse with its reason (rpm, tpm, account_rpm, "
    "account_tpm, budget, balance, unavailable).",
    ("decision", "reason"),
    registry=_registry,
)

_Children = tuple[Any, Any, Any]
_children: dict[tuple[str, str, str, str], _Children] = {}


def _labelled(labels: tuple[str, str, str, str]) -> _Children:
    found = _children.get(labels)
    if found is None:
        found = (REQUESTS.labels(*labels), LATENCY.labels(*labels), TTFT.labels(*labels))
        _children[labels] = found
    return found


_decisions: dict[tuple[str, str], Any] = {}


def _decided(decision: str, reason: str) -> None:
    child = _decisions.get((decision, reason))
    if child is None:
        child = _decisions[(decision, reason)] = LIMITER.labels(decision, reason)
    child.inc()


def observe(ex: Exchange) -> None:
    """A settled request: once per request, a handful of dictionary lookups and additions. Never
    raises: a metric that cannot be written (its directory removed) must not stop the request's
    settlement and usage record."""
    try:
        _observe(ex)
    except Exception:
        logger.warning("metrics.observe_failed", exc_info=True)


def _observe(ex: Exchange) -> None:
    surface = "batch" if ex.batch_id else ex.surface
    model = ex.model.model_id if ex.model is not None else "unknown"
    provider = ex.route.provider_slug if ex.route is not None else "none"
    count, latency, ttft = _labelled((surface, model, provider, str(ex.status)))
    count.inc()
    latency.observe(time.monotonic() - ex.started)
    if ex.ttft_ms is not None:
        ttft.observe(ex.ttft_ms / 1000)
    if ex.admission is not None:
        _decided("admit", "")
    elif ex.refused:
        _decided("refuse", ex.refused)
    if ex.handed_off and ex.status == 502 and ex.route is not None:
        UPSTREAM_ERRORS.labels(ex.route.provider_slug, "stream").inc()


def upstream_failed(route: RouteInfo, status: int | None) -> None:
    try:
        UPSTREAM_ERRORS.labels(route.provider_slug, str(status) if status else "network").inc()
    except Exception:
        logger.warning("metrics.observe_failed", exc_info=True)


def retried(route: RouteInfo) -> None:
    try:
        RETRIES.labels(route.provider_slug).inc()
    except Exception:
        logger.warning("metrics.observe_failed", exc_info=True)


# --- exposition -------------------------------------------------------------------------------


class Backlog:
    """Usage records not yet in the database, read at scrape time (the stream is shared by every
    process; without Redis there is one process and this is its buffer)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tokenfactory_metering_backlog_records",
            "Usage records waiting to be written to the database.",
            value=metering.pending(),
        )


_backlog_registry = CollectorRegistry(auto_describe=False)
_backlog_registry.register(Backlog())


def exposition() -> bytes:
    """Every metric in Prometheus' text format: all workers' values in multiprocess mode."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = _registry
    return generate_latest(registry) + generate_latest(_backlog_registry)


# Loopback and private networks (RFC 1918, IPv6 unique-local): not ``is_private``, which also
# takes in documentation and other reserved ranges.
_INTERNAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    )
)


def is_internal(address: str | None) -> bool:
    """Loopback or a private network's address; None is a Unix socket, local by nature."""
    if address is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _INTERNAL)


def client_address(scope: dict[str, Any]) -> str | None:
    """The caller's address as ``accounts.throttle.client_address`` takes it: behind a proxy
    (BEHIND_PROXY) the hop the proxy appended to X-Forwarded-For, else the socket's peer."""
    if settings.BEHIND_PROXY:
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                hops = [hop.strip() for hop in value.decode("latin-1").split(",") if hop.strip()]
                if hops:
                    return hops[-1]
    client = scope.get("client")
    return str(client[0]) if client else None


def allowed(scope: dict[str, Any]) -> tuple[int, str]:
    """(200, "") for a scraper that may read the metrics, else the status and why not: the
    bearer token when METRICS_TOKEN is set, an internal address when it is not."""
    token: str = settings.METRICS_TOKEN
    if token:
        sent = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                sent = value
        if hmac.compare_digest(sent, f"Bearer {token}".encode()):
            return 200, ""
        return 401, "Send the metrics token: Authorization: Bearer $METRICS_TOKEN.\n"
    if is_internal(client_address(scope)):
        return 200, ""
    return 403, "Metrics are served to internal addresses only unless METRICS_TOKEN is set.\n"


async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /metrics`` as a bare ASGI app: no Django handler, middleware, host check or HTTPS
    redirect between a scraper on the internal network and the numbers."""
    status, reason = allowed(scope)
    if status == 200 and scope.get("method") not in ("GET", "HEAD"):
        status, reason = 405, "GET only.\n"
    if status == 200:
        body = await asyncio.to_thread(exposition)
        content_type = CONTENT_TYPE_LATEST
    else:
        body, content_type = reason.encode(), "text/plain; charset=utf-8"
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )
