"""Which upstream serves a request: routes in priority order (weighted among equals), with retries
and fallback on failures that happen before the first byte reached the client."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from django.conf import settings

from gateway import errors, metrics
from gateway.catalog import ModelInfo, RouteInfo
from gateway.providers import Provider, UpstreamError, get

_MAX_HONOURED_RETRY_AFTER_S = 2.0

# An upstream error message about something the gateway sent rather than the caller's content.
_ABOUT_OUR_REQUEST = re.compile(
    r"header|request[ _-]?id|uuid|authori[sz]ation|api[ _-]?key|api[ _-]?version|content[ _-]type"
    r"|credential|token is (?:invalid|expired)",
    re.IGNORECASE,
)


def caller_caused(exc: UpstreamError) -> bool:
    """Whether an upstream 4xx is the caller's to fix. Only a refusal of the request's content
    is: HTTP 400, 413 or 422 carrying the protocol's own JSON error message (a context too long,
    a parameter out of range) that is not about something only the gateway sends (a header, our
    request id, credentials, the API version). Anything else (a 4xx with no JSON error message,
    such as a plain-text "Invalid UUID in request header", or any other 4xx status) is between
    the gateway and the upstream: the caller gets a 503 ``model_unavailable`` and the operator the
    upstream's body in the log (``Provider.failure``)."""
    return (
        exc.status in (400, 413, 422)
        and bool(exc.message)
        and not _ABOUT_OUR_REQUEST.search(exc.message)
    )


def ordered(routes: Sequence[RouteInfo]) -> list[RouteInfo]:
    """Routes by priority; inside one priority, a weighted random order."""
    out: list[RouteInfo] = []
    by_priority: dict[int, list[RouteInfo]] = {}
    for route in routes:
        by_priority.setdefault(route.priority, []).append(route)
    for priority in sorted(by_priority):
        group = by_priority[priority]
        if len(group) == 1:
            out.extend(group)
            continue
        pool = list(group)
        while pool:
            pick = random.choices(pool, weights=[max(r.weight, 1) for r in pool])[0]
            pool.remove(pick)
            out.append(pick)
    return out


@dataclass
class Opened:
    route: RouteInfo
    provider: Provider
    response: httpx.Response
    attempts: int


BuildFn = Callable[[RouteInfo, Provider], httpx.Request]


async def open_upstream(model: ModelInfo, build: BuildFn, *, stream: bool) -> Opened:
    """Send to the first route that answers 2xx. Raises a GatewayError in the caller's terms."""
    routes = ordered(model.routes)
    if not routes:
        raise errors.ModelUnavailable(
            f"{model.model_id} has no active upstream route right now. Try another model."
        )
    max_attempts = max(1, settings.GATEWAY_MAX_ATTEMPTS)
    plan = [routes[i % len(routes)] for i in range(max(max_attempts, len(routes)))][:max_attempts]
    last: UpstreamError | None = None
    refused: set[int] = set()  # routes whose upstream refused what we send it (not retried)
    for attempt, route in enumerate(plan):
        if id(route) in refused:
            continue
        provider = get(route.protocol)
        if attempt and last is not None:
            metrics.retried(route)
            await asyncio.sleep(_backoff(attempt, last, same_route=route is plan[attempt - 1]))
        try:
            response = await provider.send(build(route, provider), stream=stream)
        except UpstreamError as exc:
            last = exc
            metrics.upstream_failed(route, exc.status)
            if exc.retryable:
                continue
            if exc.status is not None and 400 <= exc.status < 500 and not caller_caused(exc):
                # This upstream refuses what the gateway sends it (its body was logged by the
                # provider): another route may not.
                refused.add(id(route))
                continue
            raise _to_gateway_error(exc, model) from exc
        return Opened(route=route, provider=provider, response=response, attempts=attempt + 1)
    assert last is not None
    raise _to_gateway_error(last, model)


def _backoff(attempt: int, last: UpstreamError | None, *, same_route: bool) -> float:
    if not same_route:
        return 0.0
    if last is not None and last.retry_after is not None:
        return min(last.retry_after, _MAX_HONOURED_RETRY_AFTER_S)
    return min(0.05 * 2**attempt, 1.0) * (0.75 + random.random() / 2)


def _to_gateway_error(exc: UpstreamError, model: ModelInfo) -> errors.GatewayError:
    """The caller's error for an upstream failure: the status and a short message of ours. Only
    a 4xx's own JSON error message (already cut short by the provider) is passed on; a 5xx's
    body never is (it was logged by the provider)."""
    status = exc.status
    detail = exc.message
    if exc.started:
        return errors.UpstreamTimeout(
            f"The upstream provider for {model.model_id} took the request and did not answer in "
            f"time ({detail}). It was not retried, since the upstream may still be working on "
            "it. Retry, or try another model.",
        )
    if status is None:
        return errors.ModelUnavailable(
            f"{model.model_id} is temporarily unavailable: {detail}. Retry, or try another model."
        )
    if status in (401, 403):
        # The upstream refused *our* credentials; the caller's key is fine and must not look bad.
        return errors.UpstreamFailed(
            f"The upstream provider for {model.model_id} rejected the gateway's credentials. "
            "This is our problem, not your key's; an operator has to fix the provider's API key."
        )
    if status == 404:
        # The model is in our catalog; an upstream that does not know it is a route to fix.
        return errors.UpstreamNotFound(
            f"The upstream provider does not know {model.model_id} (HTTP 404)"
            + (f": {detail}" if detail else "")
            + ". An operator has to fix its route."
        )
    if status == 429:
        retry = max(1, round(exc.retry_after)) if exc.retry_after is not None else 1
        # Not the caller's limit: the model cannot be served right now.
        return errors.ModelUnavailable(
            f"The upstream provider for {model.model_id} is rate limiting us (HTTP 429)"
            + (f": {detail}" if detail else "")
            + ". Retry, or try another model.",
            retry_after=retry,
        )
    if status >= 500 or not caller_caused(exc):
        # Not about the caller's request: the upstream's body was logged for the operator.
        return errors.UpstreamFailed(
            f"The upstream provider for {model.model_id} failed (HTTP {status}). "
            "Retry, or try another model."
            + (
                ""
                if status >= 500
                else " The gateway's request was refused, not yours; an operator can see why."
            ),
        )
    return errors.UpstreamRejected(
        detail or f"The upstream provider for {model.model_id} refused the request (HTTP {status})",
        status=400 if status in (409, 422) else status,
    )
