"""What every upstream provider does: build the request, send it through the process's one pooled
HTTP client, and turn an upstream failure into an UpstreamError the router can act on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import orjson

from gateway.catalog import RouteInfo
from gateway.providers.transport import READ_WHOLE, UpstreamTransport

logger = logging.getLogger("tokenfactory.upstream")

LOGGED_BODY_CHARS = 2000  # of an upstream's error body, in the operator's log
ECHOED_MESSAGE_CHARS = 300  # of an upstream's own JSON error message, passed on for 4xx

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


_transports: weakref.WeakKeyDictionary[httpx.AsyncClient, UpstreamTransport] = (
    weakref.WeakKeyDictionary()
)


def http_client() -> httpx.AsyncClient:
    """One pooled client per event loop (one per worker process in production), over aiohttp's
    connection pool (see ``transport``)."""
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        limits = httpx.Limits(
            max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30
        )
        transport = UpstreamTransport(limits)
        found = httpx.AsyncClient(
            transport=transport,
            limits=limits,
            timeout=httpx.Timeout(60.0, connect=5.0),
            follow_redirects=False,
        )
        _clients[loop] = found
        _transports[found] = transport
    return found


async def close_http_client() -> None:
    """Close this event loop's pooled client (a loop that ends: a batch run, a test server)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        with contextlib.suppress(Exception):
            await client.aclose()


_targets: dict[tuple[str, float, float], tuple[httpx.URL, dict[str, float | None]]] = {}


def _target(route: RouteInfo, url: str) -> tuple[httpx.URL, dict[str, float | None]]:
    """The parsed URL and the timeouts of a route's operation, worked out once (read only)."""
    key = (url, route.connect_timeout_s, route.first_byte_timeout_s)
    found = _targets.get(key)
    if found is None:
        timeout = httpx.Timeout(
            connect=route.connect_timeout_s,
            read=route.first_byte_timeout_s,
            write=route.connect_timeout_s,
            pool=route.connect_timeout_s,
        )
        found = (httpx.URL(url), timeout.as_dict())
        if len(_targets) < 4096:
            _targets[key] = found
    return found


def request_timeouts(route: RouteInfo, url: str) -> tuple[httpx.URL, dict[str, float | None]]:
    """The parsed URL and the timeouts extension for a request to ``url`` on ``route`` (for a
    provider that builds its own requests)."""
    return _target(route, url)


class UpstreamError(Exception):
    """An upstream attempt failed. ``retryable`` failures may be tried again (the same route or
    the next): only those where the upstream did no work, or ended what it did by answering
    the failure (connect failures, 408/409/425/429, 5xx other than 504)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        retry_after: float | None = None,
        body: Any = None,
        started: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.body = body
        # The upstream may have started (or done) the work: the attempt was abandoned, not
        # refused, and what it cost is unknown.
        self.started = started


class Provider:
    protocol: ClassVar[str]
    # The protocol the pipeline speaks with this provider, when not its own: AWS Bedrock takes
    # and gives Anthropic Messages and does the Converse translation itself.
    speaks: ClassVar[str] = ""
    # Paths of the operations, relative to the provider's base URL.
    paths: ClassVar[dict[str, str]]

    # The header the protocol carries an API key in, when the provider names no auth style.
    default_auth: ClassVar[str]

    def protocol_headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        """The headers the protocol itself needs (accept, a version header)."""
        raise NotImplementedError

    def headers(self, route: RouteInfo, forwarded: Mapping[str, str]) -> dict[str, str]:
        """What goes upstream, per provider: the protocol's headers; credentials in the
        provider's auth style; our request id only in ``route.request_id_header`` (empty: not
        sent); of the caller's headers (``forwarded``: the client's request headers by
        lower-case name, and ``x-request-id`` our id) only those named in
        ``route.forward_headers``; then the provider's fixed ``extra_headers``."""
        headers = self.protocol_headers(forwarded)
        key = route.api_key
        style = route.auth_style or self.default_auth
        if key and style == "bearer":
            headers["authorization"] = f"Bearer {key}"
        elif key and style in ("x-api-key", "api-key"):
            headers[style] = key
        for name in route.forward_headers:
            value = forwarded.get(name)
            if value is not None and name != "x-request-id":
                headers[name] = value
        if route.request_id_header:
            request_id = forwarded.get("x-request-id")
            if request_id:
                headers[route.request_id_header] = request_id
        for name, value in route.extra_headers:
            headers[name] = value
        return headers

    def error_message(self, body: Any) -> str:
        raise NotImplementedError

    def url(self, route: RouteInfo, operation: str) -> str:
        return route.base_url + self.paths[operation]

    def build(
        self, route: RouteInfo, operation: str, body: bytes, forwarded: Mapping[str, str]
    ) -> httpx.Request:
        headers = self.headers(route, forwarded)
        headers["content-type"] = "application/json"
        url, timeouts = _target(route, self.url(route, operation))
        # A bare httpx.Request: the client's defaults (base URL, cookies, auth, headers) are
        # not used, and merging them cost more CPU than the rest of the request building.
        return httpx.Request(
            "POST", url, content=body, headers=headers, extensions={"timeout": timeouts}
        )

    async def send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """Send and return a 2xx response (its body unread when ``stream``); raise UpstreamError."""
        if not stream:
            request.extensions[READ_WHOLE] = True
        try:
            # Straight to the pooled transport: no redirects, auth or cookie handling to run.
            client = http_client()
            response = await _transports[client].handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the upstream: safe to try again or elsewhere.
            raise UpstreamError(
                f"could not reach the upstream ({type(exc).__name__})", retryable=True
            ) from exc
        except httpx.TimeoutException as exc:
            # The request went out and no answer came in time: the upstream may be generating
            # right now, so another attempt could run (and cost) the same work twice.
            raise UpstreamError(
                f"upstream timed out ({type(exc).__name__})", retryable=False, started=True
            ) from exc
        except httpx.TransportError as exc:
            # The connection broke after the request was sent: it may have been taken.
            raise UpstreamError(
                f"the upstream connection broke ({type(exc).__name__})",
                retryable=False,
                started=True,
            ) from exc
        if response.status_code < 300:
            return response
        try:
            content = await response.aread()
        except httpx.HTTPError:
            content = b""
        finally:
            await response.aclose()
        raise self.failure(response.status_code, content, response.headers)

    def failure(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """The upstream's error as an UpstreamError whose ``message`` is only the upstream's own
        JSON error message (cut short), or empty: a body that is not the protocol's error shape
        (an HTML page from a proxy or a mistaken URL) is logged for the operator, never passed
        on. The router decides how much of ``message`` a caller sees."""
        try:
            body = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            body = None
        message = self.error_message(body) if body is not None else ""
        message = message[:ECHOED_MESSAGE_CHARS]
        logger.warning(
            "upstream answered HTTP %s: %s",
            status,
            content[:LOGGED_BODY_CHARS].decode(errors="replace"),
            extra={
                "upstream_status": status,
                "upstream_content_type": headers.get("content-type", ""),
            },
        )
        retry_after = _retry_after(headers)
        # 504 is a proxy that gave up waiting while the upstream may still be generating.
        retryable = status in (408, 409, 425, 429) or (status >= 500 and status != 504)
        return UpstreamError(
            message, status=status, retryable=retryable, retry_after=retry_after, body=body
        )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
