"""The request pipeline: every inference request (chat on both surfaces, Responses, embeddings,
audio, images, count_tokens, and each batch line) is one ``Exchange`` that goes

    start (size, key) -> parse (the view) -> resolve the model -> admit -> open the upstream
    (through ``routing``: retries and fallback) -> answer or relay -> settle and record

and that fails the same way wherever it fails. ``run`` holds the one try/except that guarantees
it: whatever ends a request after admission (an error, a bug, a client hanging up) releases the
reservation and writes exactly one usage record, made by ``usage_record`` and priced by
``cost_micros`` (the only places). Views parse, call these functions, and reply; the per-protocol
stream relays live in ``gateway/relay.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from billing import money, windows
from gateway import (
    auth,
    auto,
    catalog,
    errors,
    limits,
    metering,
    metrics,
    providers,
    relay,
    routing,
    tokens,
)
from gateway.auth import Caller
from gateway.catalog import ModelInfo, RouteInfo
from gateway.errors import ANTHROPIC, OPENAI, GatewayError
from gateway.limits import Admission
from gateway.providers import Provider, tokenizers, transport
from gateway.providers import get as get_provider
from gateway.tokens import Usage
from gateway.translate import requests as treq
from gateway.translate import responses as tresp
from gateway.translate import sse
from gateway.translate.errors import TranslationError

logger = logging.getLogger("tokenfactory.gateway")

_ROLES = {
    OPENAI: ("system", "developer", "user", "assistant", "tool", "function"),
    # The 2026 Anthropic SDK's system messages: folded or translated for the upstream.
    ANTHROPIC: ("user", "assistant", "system"),
}
# The caller's headers a protocol itself needs upstream; any other header goes only to a provider
# that names it in ``forward_headers``.
_PROTOCOL_HEADERS = ("anthropic-version",)
# Headers commonly forwarded, checked before the request is admitted (one a provider names
# beyond these is checked when it is forwarded).
_CHECKED_FIRST = ("anthropic-beta", "x-sim-options")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# What a stream that broke off records: the status and code of errors.UpstreamFailed.
_UPSTREAM_FAILED = (errors.UpstreamFailed.status, str(errors.UpstreamFailed.code))
_UNIT_NAMES = {"seconds": "second of audio", "characters": "million characters", "images": "image"}

# Our own generator: nobody else seeds it (test tools seed the module-level one), and each
# forked child (Celery's prefork pool) reseeds it from the OS.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A request's id: 96 random bits. Not a secret, but it keys the usage record's idempotency,
    so it must not repeat; a Mersenne Twister seeded from the OS costs no system call, where
    ``secrets`` costs a getrandom(2) per id (a measured 5% of the event loop's time)."""
    return f"req_{_ids.getrandbits(96):024x}"


@dataclass(slots=True)
class Exchange:
    """One request's journey, from the first byte in to the usage record."""

    surface: str
    endpoint: str = "chat"
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    caller: Caller | None = None
    secret: str = ""
    model: ModelInfo | None = None
    # The name the client sent when it is not ``model``'s id (an alias, or an id with a suffix
    # such as "[1m]"): the answer names it, the usage record keeps both.
    requested_model: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    route: RouteInfo | None = None
    admission: Admission | None = None
    usage: Usage | None = None
    # What the upstream has already done for this request that stands whatever happens next (the
    # earlier prompts of a several-prompt completion): billed even if the request then fails.
    spent: Usage | None = None
    # Set for a unit-priced request (seconds, characters, images): what it is billed for.
    units: int | None = None
    ttft_ms: int | None = None
    status: int = 200
    error_code: str = ""
    forwarded: dict[str, str] = field(default_factory=dict)
    # The client's request headers (a live request's), read by providers' ``forward_headers``.
    client_headers: Mapping[str, str] = field(default_factory=dict)
    refusal_headers: dict[str, str] = field(default_factory=dict)
    # Batch lines: their batch, their price (percent of live), no RPM count, and how their key is
    # reloaded when it changed (live requests reload it from ``secret``).
    batch_id: str = ""
    price_factor_percent: int = 100
    counts_rpm: bool = True
    reload_caller: Callable[[], Awaitable[Caller | None]] | None = None
    # False for a request nobody is billed for (count_tokens): no usage record.
    metered: bool = True
    # A streamed answer's body settles the request itself, when the stream ends.
    handed_off: bool = False
    recorded: bool = False
    # Why admission refused it ("rpm", "balance", ..., "unavailable"): for gateway.metrics.
    refused: str = ""

    def headers(self) -> dict[str, str]:
        out = errors.request_id_headers(self.surface, self.request_id)
        if self.admission is not None:
            out.update(self.admission.headers)
        else:
            out.update(self.refusal_headers)
        return out

    @property
    def client_model(self) -> str:
        """The model name the answer carries: the one the client asked for (``auto`` names the
        model chosen)."""
        if self.requested_model:
            return self.requested_model
        return self.model.model_id if self.model is not None else ""

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


# --- running a request: the one try/except --------------------------------------------------


def serve(
    request: HttpRequest,
    *,
    surface: str,
    endpoint: str,
    steps: Callable[[Exchange, HttpRequest], Awaitable[HttpResponseBase]],
    metered: bool = True,
) -> Awaitable[HttpResponseBase]:
    """Run an inference view's ``steps`` (parse, the pipeline's calls, the reply) for a request:
    its size and key checked first, any error answered in the surface's envelope."""
    ex = Exchange(surface=surface, endpoint=endpoint, metered=metered)
    return run(ex, steps, request, on_error=fail)


async def run[A, R](
    ex: Exchange,
    steps: Callable[[Exchange, A], Awaitable[R]],
    arg: A,
    *,
    on_error: Callable[[Exchange, GatewayError], R],
    commit: Callable[[R, metering.UsageRecord], Awaitable[None]] | None = None,
) -> R:
    """Run ``steps(ex, arg)`` (``arg``: the HttpRequest of a live request, whose size and key
    are checked first; a batch's line) and settle the request once, however it ends: an answer,
    a GatewayError (answered by ``on_error``), a bug (a 500 in the caller's envelope) or a
    cancellation (the client hung up: recorded as 499 and raised on). ``commit`` writes the
    record with the result (a batch line's result, record and charge commit together)."""
    try:
        if isinstance(arg, HttpRequest):
            await start(ex, arg)
        result = await steps(ex, arg)
    except GatewayError as err:
        result = _failed(ex, err, on_error)
    except Exception as exc:
        logger.exception("request failed", extra={"request_id": ex.request_id})
        crash = GatewayError(f"The gateway failed on this request ({type(exc).__name__}).")
        result = _failed(ex, crash, on_error)
    except BaseException as exc:
        ex.usage, ex.units = None, None
        if isinstance(exc, asyncio.CancelledError):
            ex.status, ex.error_code = 499, "client_disconnected"
        else:
            ex.status, ex.error_code = 500, "server_error"
        if not ex.handed_off:
            await asyncio.shield(settle(ex))
        raise
    if not ex.handed_off:
        await settle(ex, commit=None if commit is None else _bound(commit, result))
    return result


def _failed[R](
    ex: Exchange, err: GatewayError, on_error: Callable[[Exchange, GatewayError], R]
) -> R:
    ex.status = err.status
    ex.error_code = err.code or err.type
    ex.usage, ex.units = ex.spent, None
    if err.status >= 500:
        logger.warning(
            "upstream failure",
            extra={"request_id": ex.request_id, "status": err.status, "error": err.message},
        )
    if isinstance(err, errors.UpstreamTimeout) and ex.route is not None:
        # An abandoned attempt: the upstream took the prompt and may have generated an answer
        # nobody receives. Its record (this request's, status 503) names the
        # route; what it is known to have cost the upstream is the prompt, logged here.
        logger.warning(
            "abandoned upstream attempt",
            extra={
                "request_id": ex.request_id,
                "route": f"{ex.route.provider_slug}:{ex.route.upstream_model}",
                "prompt_tokens_estimate": tokens.count_request(ex.body),
                "waited_ms": ex.elapsed_ms(),
            },
        )
    return on_error(ex, err)


def _bound[R](
    commit: Callable[[R, metering.UsageRecord], Awaitable[None]], result: R
) -> Callable[[metering.UsageRecord], Awaitable[None]]:
    def bound(record: metering.UsageRecord) -> Awaitable[None]:
        return commit(result, record)

    return bound


def fail(ex: Exchange, err: GatewayError) -> HttpResponseBase:
    """The error answer of a live request, in its surface's envelope."""
    response = errors.response(err, ex.surface, ex.request_id)
    headers = ex.admission.headers if ex.admission is not None else ex.refusal_headers
    for name, value in headers.items():
        response[name] = value
    return response


# --- settling: the one place a request is priced and recorded --------------------------------


def cost_micros(
    model: ModelInfo | None,
    *,
    usage: Usage | None = None,
    units: int | None = None,
    price_factor_percent: int = 100,
) -> int:
    """What a request costs: its units at the model's unit price, or its tokens at the model's
    token prices; times ``price_factor_percent`` (batch lines), rounded up."""
    if model is None:
        return 0
    if units is not None:
        return money.request_cost(
            units=units,
            unit_price_micros=model.unit_price_micros,
            units_per_price=money.TOKENS_PER_PRICE_UNIT if model.unit == "characters" else 1,
            price_factor_percent=price_factor_percent,
        )
    if usage is None or not usage.total_tokens or not model.is_priced:
        return 0
    return money.request_cost(
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens,
        input_price_micros=model.input_price_micros,
        output_price_micros=model.output_price_micros,
        cached_input_price_micros=model.cached_input_price_micros,
        price_factor_percent=price_factor_percent,
    )


async def settle(
    ex: Exchange, *, commit: Callable[[metering.UsageRecord], Awaitable[None]] | None = None
) -> None:
    """Swap the reservation for what was used and write the usage record: exactly once."""
    if ex.recorded:
        return
    ex.recorded = True
    metrics.observe(ex)
    if not ex.metered or (ex.caller is None and commit is None):
        return
    cost = cost_micros(
        ex.model, usage=ex.usage, units=ex.units, price_factor_percent=ex.price_factor_percent
    )
    admission = ex.admission
    billed = cost if admission is not None and admission.paid else 0
    record = usage_record(ex, cost_micros=cost, billed_micros=billed)
    if commit is not None:
        await commit(record)
    if ex.caller is None:
        return
    if admission is not None:
        # With ``commit``, the record is in the database already; the copy settling queues is a
        # no-op (metering dedupes on the request id).
        used = ex.usage.total_tokens if ex.usage is not None else 0
        await limits.settle(admission, tokens=used, billed_micros=billed, record=record)
    elif commit is None:
        await metering.record_unadmitted(record)


def usage_record(ex: Exchange, *, cost_micros: int, billed_micros: int) -> metering.UsageRecord:
    """The usage record of a request that has ended (the only place one is made from a request)."""
    usage = ex.usage or Usage()
    return metering.UsageRecord(
        request_id=ex.request_id,
        account_id=ex.caller.account_id if ex.caller else 0,
        key_id=ex.caller.key_id if ex.caller else None,
        surface=ex.surface,
        endpoint=ex.endpoint,
        model=ex.model.model_id if ex.model else str(ex.body.get("model", ""))[:200],
        requested_model=ex.requested_model,
        route=f"{ex.route.provider_slug}:{ex.route.upstream_model}" if ex.route else "",
        status=ex.status,
        error_code=ex.error_code,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        is_estimate=usage.is_estimate,
        counted_by=(usage.counted_by or "upstream") if ex.usage is not None else "",
        cost_micros=cost_micros,
        billed_micros=billed_micros,
        in_window=not (ex.admission is not None and ex.admission.paid),
        latency_ms=ex.elapsed_ms(),
        ttft_ms=ex.ttft_ms,
        stream=ex.stream,
        batch_id=ex.batch_id,
        created_at_ms=int(time.time() * 1000),
    )


# --- the request edge ------------------------------------------------------------------------


async def start(ex: Exchange, request: HttpRequest) -> None:
    """Size and key first (a request without a valid key is answered before it is read)."""
    check_size(request)
    ex.caller = await authenticate(request)
    ex.secret = auth.bearer_from(request)
    ex.client_headers = request.headers
    for name in _CHECKED_FIRST:
        value = request.headers.get(name)
        if value:
            _forwardable(name, value)
    ex.forwarded = {
        name: _forwardable(name, value)
        for name in _PROTOCOL_HEADERS
        if (value := request.headers.get(name))
    }
    ex.forwarded["x-request-id"] = ex.request_id


def _forwardable(name: str, value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise errors.BadRequest(
            f"The {name} header must be printable ASCII; it is passed on to the upstream.",
            param=name,
        )
    return value


def check_size(request: HttpRequest) -> None:
    length = request.headers.get("content-length")
    limit = settings.GATEWAY_MAX_BODY_BYTES
    if length and length.isdigit() and int(length) > limit:
        raise errors.PayloadTooLarge(
            f"The request body is {int(length):,} bytes; the limit is {limit:,}. Send less content."
        )


def read_json(request: HttpRequest) -> dict[str, Any]:
    check_size(request)
    limit = settings.GATEWAY_MAX_BODY_BYTES
    raw = request.body
    if len(raw) > limit:
        raise errors.PayloadTooLarge(f"The request body is over the {limit:,}-byte limit.")
    if not raw:
        raise errors.BadRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.")
    check_depth(body, raw)
    return body


# How deeply a request's JSON may nest. An upstream body is encoded with orjson, which stops at
# 255 levels; translation adds a few, so past this a request could be admitted and then fail.
MAX_JSON_DEPTH = 200


def check_depth(value: Any, raw: bytes = b"") -> None:
    """BadRequest if ``value`` (parsed from ``raw``) nests deeper than ``MAX_JSON_DEPTH``. Counting
    the raw brackets first (a C loop) leaves the walk to the rare body that has that many."""
    if raw and raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    if _depth_over(value, MAX_JSON_DEPTH):
        raise errors.BadRequest(
            f"The request's JSON is nested more than {MAX_JSON_DEPTH} levels deep; "
            "send a flatter body."
        )


def _depth_over(value: Any, left: int) -> bool:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if left == 0:
        return True
    return any(_depth_over(child, left - 1) for child in children)


async def authenticate(request: HttpRequest) -> Caller:
    secret = auth.bearer_from(request)
    if not secret:
        raise errors.Unauthorized(
            "No API key. Send your tf- key as 'Authorization: Bearer tf-...' "
            "or as 'x-api-key: tf-...'."
        )
    caller = await auth.authenticate(secret)
    if caller is None:
        raise errors.Unauthorized(
            "Invalid API key: it is unknown, revoked or expired. Create a key in the dashboard."
        )
    auth.remember(request, caller)
    return caller


async def resolve(ex: Exchange, *, kind: str) -> ModelInfo:
    """Set and return the model the body names (or the one ``auto`` picks: gateway/auto.py; or
    the one an alias maps it to: gateway/catalog.py ``candidates``)."""
    assert ex.caller is not None
    ex.model = await resolve_model(ex.body, ex.caller, kind=kind)
    name = ex.body.get("model")
    ex.requested_model = name if isinstance(name, str) and name != ex.model.model_id else ""
    if name == auto.AUTO:
        ex.requested_model = ""
    return ex.model


def usable(model: ModelInfo, caller: Caller, *, kind: str) -> bool:
    """Whether ``caller`` may be served by ``model`` on an endpoint of ``kind``."""
    return (
        model.kind == kind
        and model.is_priced
        and bool(model.routes)
        and caller.may_use(model.model_id, model.tier)
    )


async def resolve_model(body: dict[str, Any], caller: Caller, *, kind: str) -> ModelInfo:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("'model' is required and must be a string.", param="model")
    snap = await catalog.snapshot()
    if name == auto.AUTO:
        return auto.choose(snap, caller, body, kind=kind)
    found = catalog.candidates(snap, name)
    if not found:
        raise errors.UnknownModel(
            f"The model '{name[:200]}' does not exist. GET /v1/models lists the models you can "
            "use.",
            param="model",
        )
    for model in found:
        # An alias's first model the caller may use serves it: an alias never widens access.
        if usable(model, caller, kind=kind):
            return model
    model = found[0]
    label = f"'{name[:200]}'"
    if model.model_id != name:
        label = f"'{name[:200]}' (served by {model.model_id})"
    if model.kind != kind:
        raise errors.BadRequest(
            f"{label} is a {model.kind} model and cannot serve this endpoint.", param="model"
        )
    if not caller.may_use(model.model_id, model.tier):
        if caller.allowed_models and model.model_id not in caller.allowed_models:
            raise errors.Forbidden(
                f"This key may not use {label}: it is limited to "
                f"{', '.join(sorted(caller.allowed_models))}.",
                param="model",
            )
        raise errors.Forbidden(
            f"Your plan ({caller.plan_name}) does not include {label} ({model.tier} tier). "
            "Upgrade your plan to use it.",
            param="model",
        )
    if not model.is_priced:
        raise errors.ModelUnavailable(
            f"{label} has no price set, so it cannot be served. Try another model.", param="model"
        )
    return model


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.BadRequest(f"'{name}' must be a positive integer.", param=name)
    return value


class ChatShape(NamedTuple):
    """What admission needs from a chat body, checked: ``max_tokens`` is per choice, and an
    OpenAI request asks for ``choices`` (its ``n``) answers, each up to that ceiling."""

    stream: bool
    max_tokens: int | None
    choices: int


MAX_CHOICES = 128  # OpenAI's own bound on ``n``


def check_chat(body: dict[str, Any], surface: str) -> ChatShape:
    """Shape checks the upstream cannot be trusted to make for us."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.BadRequest("'messages' must be a non-empty array.", param="messages")
    roles = _ROLES[surface]
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise errors.BadRequest(
                f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]"
            )
        if message["role"] not in roles:
            # Translation refuses these already; a same-protocol route must not pass them on.
            raise errors.BadRequest(
                f"messages[{i}].role: '{message['role'][:40]}' is not one of {', '.join(roles)}.",
                param=f"messages[{i}].role",
            )
    check_sampling(body, surface)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise errors.BadRequest("'stream' must be true or false.", param="stream")
    if surface == ANTHROPIC:
        if "max_tokens" not in body:
            raise errors.BadRequest("max_tokens: Field required", param="max_tokens")
        max_tokens = _int_field(body, "max_tokens")
    else:
        max_tokens = _int_field(body, "max_completion_tokens") or _int_field(body, "max_tokens")
    choices = 1
    if surface != ANTHROPIC:
        choices = _int_field(body, "n") or 1
        if choices > MAX_CHOICES:
            raise errors.BadRequest(f"'n' must be at most {MAX_CHOICES}.", param="n")
    return ChatShape(stream=stream, max_tokens=max_tokens, choices=choices)


# Each surface's range for the sampling parameters (OpenAI's temperature goes to 2, Anthropic's
# to 1): a value outside it is refused here, never passed on or clamped.
_SAMPLING_RANGES = {
    OPENAI: {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)},
    ANTHROPIC: {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0)},
}


def check_sampling(body: dict[str, Any], surface: str) -> None:
    for name, (low, high) in _SAMPLING_RANGES[surface].items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise errors.BadRequest(f"'{name}' must be a number.", param=name)
        if not low <= value <= high:
            raise errors.BadRequest(
                f"'{name}' must be from {low:g} to {high:g}; it is {value:g}.", param=name
            )


def requested_output(model: ModelInfo, shape: ChatShape) -> int:
    """The output a chat request asks for: max_tokens (capped by the model) times ``n``; 0 when
    it sets none."""
    if not shape.max_tokens:
        return 0
    return min(shape.max_tokens, model.max_output_tokens or 1 << 30) * shape.choices


def output_ceiling(model: ModelInfo, shape: ChatShape) -> int:
    """The output tokens a chat request reserves: what it asks for per choice, capped by the
    model, times the choices it asks for (``n``: each one is billed)."""
    per_choice = min(
        shape.max_tokens or model.max_output_tokens or 4096, model.max_output_tokens or 1 << 30
    )
    return per_choice * shape.choices


# --- admission -------------------------------------------------------------------------------


async def admit(
    ex: Exchange,
    *,
    input_tokens: int | tokens.InputSize,
    ceiling: int,
    requested: int = 0,
    units: int | None = None,
    on_full: Callable[[limits.Refused], Awaitable[None]] | None = None,
) -> None:
    """Ask limits to admit the request; a key changed since we cached it is reloaded first.
    ``input_tokens``: the input's size (``tokens.measure_input``), or an exact count.
    ``ceiling``: the most output it may produce; ``requested``: the output the client asked for
    (max_tokens times n; 0 when it did not say). ``units``: a unit-priced request's units, paid
    from the balance (see limits). ``on_full`` (batch lines): waits out a full RPM/TPM minute
    instead of refusing."""
    size = (
        input_tokens
        if isinstance(input_tokens, tokens.InputSize)
        else tokens.InputSize(estimate=input_tokens, bound=input_tokens)
    )
    assert ex.caller is not None and ex.model is not None
    unit_cost = None if units is None else cost_micros(ex.model, units=units)
    for _ in range(2 if on_full is None else 1000):
        try:
            ex.admission = await limits.admit(
                ex.caller,
                ex.model,
                input_tokens=size.estimate,
                input_bound=size.bound,
                max_output_tokens=ceiling,
                requested_output_tokens=requested,
                request_id=ex.request_id,
                surface=ex.surface,
                counts_rpm=ex.counts_rpm,
                price_factor_percent=ex.price_factor_percent,
                unit_cost_micros=unit_cost,
            )
            return
        except limits.Stale:
            if ex.reload_caller is not None:
                caller = await ex.reload_caller()
            else:
                caller = await auth.authenticate(ex.secret, refresh=True)
            if caller is None:
                ex.caller = None
                raise errors.Unauthorized(
                    "Invalid API key: it is unknown, revoked or expired."
                ) from None
            ex.caller = caller
            ex.model = await resolve_model(ex.body, caller, kind=ex.model.kind)
        except limits.Refused as refused:
            if on_full is not None and refused.reason in limits.RATE_REFUSALS:
                await on_full(refused)
                continue
            ex.refusal_headers = refused.headers
            ex.refused = refused.reason
            raise refusal_error(refused, ex, unit_cost_micros=unit_cost) from None
        except limits.Unavailable:
            ex.refused = "unavailable"
            raise errors.LimitsUnavailable(
                "Rate limits are unavailable right now (the limits store cannot be reached), so "
                "the request was not run. Retry in a few seconds.",
                retry_after=2,
            ) from None
    if on_full is not None:
        raise errors.RateLimited(
            "The key's token rate limit stayed full.", limit=errors.TPM, retry_after=60
        )
    raise errors.ModelUnavailable("Admission kept finding the key changed; retry the request.")


def refusal_error(
    refused: limits.Refused, ex: Exchange, *, unit_cost_micros: int | None = None
) -> GatewayError:
    caller = ex.caller
    assert caller is not None
    if refused.reason in ("tpm_too_large", "account_tpm_too_large"):
        whose, limit = (
            ("this key", caller.tpm_limit)
            if refused.reason == "tpm_too_large"
            else (f"your account, all its keys together ({caller.plan_name} plan)",
                  caller.account_tpm_limit)
        )  # fmt: skip
        return errors.BadRequest(
            f"This request counts {refused.tokens:,} tokens against the limit of {limit or 0:,} "
            f"tokens per minute for {whose} (a request counts the larger of max_tokens and its "
            "estimated input), so it can never be admitted. Lower max_tokens or shorten the "
            "input, or move to a plan with a higher TPM.",
            param="max_tokens",
        )
    if refused.reason == "rpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.rpm_limit} requests per minute for this key. "
            f"Retry after {refused.retry_after}s.",
            limit=errors.RPM,
            retry_after=refused.retry_after,
        )
    if refused.reason == "tpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.tpm_limit:,} tokens per minute for this key "
            "(a request counts the larger of max_tokens and its estimated input until it "
            f"finishes, then what it used). Retry after {refused.retry_after}s, or lower "
            "max_tokens.",
            limit=errors.TPM,
            retry_after=refused.retry_after,
        )
    if refused.reason == "account_rpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.account_rpm_limit:,} requests per minute for your "
            f"account, all its keys together (your {caller.plan_name} plan's ceiling). "
            f"Retry after {refused.retry_after}s.",
            limit=errors.ACCOUNT_RPM,
            retry_after=refused.retry_after,
        )
    if refused.reason == "account_tpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.account_tpm_limit:,} tokens per minute for your "
            f"account, all its keys together (your {caller.plan_name} plan's ceiling; a request "
            "counts the larger of max_tokens and its estimated input until it finishes). "
            f"Retry after {refused.retry_after}s.",
            limit=errors.ACCOUNT_TPM,
            retry_after=refused.retry_after,
        )
    if refused.reason in ("key_budget", "member_budget"):
        return budget_error(refused)
    if refused.reason == "budget":
        left = int(refused.headers.get("X-Token-Budget-Remaining", "0") or 0)
        spent = (
            f"has {left:,} tokens left, fewer than this request needs (about {refused.tokens:,}: "
            "its estimated input plus max_tokens)"
            if left > 0
            else "is spent"
        )
        return errors.TokenBudgetExceeded(
            f"Your {caller.plan_name} token window {spent}, and your balance is empty. It resets "
            f"in {refused.retry_after}s; add a pay-as-you-go top-up in the dashboard to go on now.",
            retry_after=refused.retry_after,
        )
    if ex.model is not None and unit_cost_micros is not None:
        balance = int(refused.headers.get("X-Balance-Micros", "0"))
        unit = _UNIT_NAMES.get(ex.model.unit, ex.model.unit)
        return errors.InsufficientBalance(
            f"'{ex.model.model_id}' is priced per {unit}, and such requests are paid from your "
            "prepaid balance, not your plan's token window: this one costs "
            f"{money.format_usd(unit_cost_micros)} and your balance is "
            f"{money.format_usd(max(0, balance))}. Top up your balance in the dashboard."
        )
    return errors.InsufficientBalance(
        "Your token window cannot cover this request and your prepaid balance is below its "
        "estimated cost (its input plus max_tokens at the model's prices). Top up your "
        "balance, or lower max_tokens."
    )


def budget_error(refused: limits.Refused) -> GatewayError:
    """A monthly spend cap's 402: whose cap, the cap, what is spent, when it resets."""
    usd = money.format_usd
    whose = (
        "this key's monthly budget"
        if refused.reason == "key_budget"
        else "the monthly budget of the member who created this key (all their keys together)"
    )
    held = (
        f", and requests still running hold {usd(refused.held_micros)} more"
        if refused.held_micros
        else ""
    )
    resets = windows.from_ms(refused.resets_at_ms).strftime("%Y-%m-%d 00:00 UTC")
    return errors.BudgetExceeded(
        f"Monthly budget reached: {whose} is {usd(refused.cap_micros)} and "
        f"{usd(refused.spent_micros)} of it is spent this month{held}; this request could cost "
        f"up to {usd(refused.cost_micros)} (its input plus max_tokens at the model's prices), "
        f"more than is left. Nothing was charged. The budget resets on {resets}; an owner or "
        "admin of the organisation can raise it on the Budgets page, or lower max_tokens."
    )


# --- the upstream ----------------------------------------------------------------------------


def upstream_body(ex: Exchange, route: RouteInfo) -> dict[str, Any]:
    """The body for ``route``'s protocol: passed through when it matches the surface (unknown
    fields kept), translated when it does not. Served through an alias, its output cap is the
    served model's at most (Claude Code asks 64,000 of any model it takes for Opus)."""
    assert ex.model is not None
    out = _upstream_body(ex, route)
    if ex.requested_model and ex.model.max_output_tokens:
        _fit_output(out, ex.model.max_output_tokens)
    return out


def _fit_output(body: dict[str, Any], limit: int) -> None:
    """Lower an output cap meant for the model a client asked for (an alias's, which may allow
    more) to the served model's limit, with an Anthropic thinking budget below it."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > limit:
            body[name] = limit
    thinking = body.get("thinking")
    max_tokens = body.get("max_tokens")
    if isinstance(thinking, dict) and isinstance(max_tokens, int):
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget >= max_tokens:
            body["thinking"] = {**thinking, "budget_tokens": max(1024, max_tokens // 2)}


def _upstream_body(ex: Exchange, route: RouteInfo) -> dict[str, Any]:
    assert ex.model is not None
    body = ex.body
    protocol = providers.wire_protocol(route.protocol)
    try:
        if protocol == ex.surface:
            out = dict(body)
            out["model"] = route.upstream_model
            if protocol == OPENAI:
                with_output_limit(out, route.output_limit_field)
            if ex.stream and protocol == OPENAI:
                options = dict(out.get("stream_options") or {})
                if route.reports_stream_usage:
                    options["include_usage"] = True
                else:
                    # A server known to ignore it (or refuse it): not sent; we count instead.
                    options.pop("include_usage", None)
                if options:
                    out["stream_options"] = options
                else:
                    out.pop("stream_options", None)
            if ex.endpoint == "responses" and protocol == OPENAI:
                # Anthropic's signed thinking, from a sealed reasoning item: not OpenAI's to read.
                out = treq.without_thinking_blocks(out)
            elif protocol == ANTHROPIC:
                # System messages inside ``messages`` are folded where an upstream takes them.
                # Thinking blocks we made from OpenAI reasoning carry no signature; clients send
                # them back and a real Anthropic upstream would refuse them.
                out = treq.strip_unsigned_thinking(treq.fold_system_messages(out))
            return out
        if ex.surface == OPENAI:
            return treq.openai_to_anthropic(
                body,
                model=route.upstream_model,
                default_max_tokens=ex.model.max_output_tokens or 4096,
                max_output_tokens=ex.model.max_output_tokens or None,
            )
        out = treq.anthropic_to_openai(body, model=route.upstream_model)
        if ex.stream and route.reports_stream_usage:
            out["stream_options"] = {"include_usage": True}
        return with_output_limit(out, route.output_limit_field)
    except TranslationError as exc:
        raise errors.BadRequest(exc.message, param=exc.param) from exc
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise errors.BadRequest(f"The request is malformed: {exc}") from exc


_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def with_output_limit(out: dict[str, Any], field_name: str) -> dict[str, Any]:
    """Put an OpenAI-protocol body's output limit in the field(s) its provider reads
    (``Provider.output_limit_field``: ``max_tokens``, ``max_completion_tokens`` or ``both``):
    a server that ignores the other would otherwise generate to its own limit."""
    limit = out.get("max_completion_tokens")
    if limit is None:
        limit = out.get("max_tokens")
    if limit is None:
        return out
    for name in _LIMIT_FIELDS:
        out.pop(name, None)
    if field_name == "both":
        out["max_tokens"] = out["max_completion_tokens"] = limit
    else:
        out[field_name or "max_tokens"] = limit
    return out


def forwarded_for(ex: Exchange, route: RouteInfo) -> dict[str, str]:
    """What a provider may take from the caller: the protocol's own headers, our request id, and
    the client's headers the provider names in ``forward_headers`` (the provider decides which
    of these it sends: ``Provider.headers``)."""
    if not route.forward_headers:
        return ex.forwarded
    forwarded = dict(ex.forwarded)
    for name in route.forward_headers:
        value = ex.client_headers.get(name)
        if value and name != "x-request-id":  # ours: the caller's never replaces it
            forwarded[name] = _forwardable(name, value)
    return forwarded


def json_builder(ex: Exchange, operation: str) -> routing.BuildFn:
    """Builds ``ex.body`` for each route tried, encoded once per protocol and upstream model."""
    encoded: dict[tuple[str, str], bytes] = {}

    def build(route: RouteInfo, provider: Provider) -> httpx.Request:
        ex.route = route  # the route being tried: a request cut short is recorded against it
        cache_key = (route.protocol, route.upstream_model)
        if cache_key not in encoded:
            try:
                encoded[cache_key] = orjson.dumps(upstream_body(ex, route))
            except orjson.JSONEncodeError as exc:  # checked at parse time; this is the backstop
                raise errors.BadRequest(f"The request cannot be forwarded: {exc}.") from exc
        return provider.build(route, operation, encoded[cache_key], forwarded_for(ex, route))

    return build


async def open_upstream(
    ex: Exchange,
    operation: str,
    *,
    build: routing.BuildFn | None = None,
    protocol: str | None = None,
    stream: bool = False,
) -> routing.Opened:
    """Send through the router (retries, then the next route); ``protocol`` keeps the routes
    of one upstream protocol (the media endpoints exist on OpenAI-protocol upstreams only)."""
    assert ex.model is not None
    model = ex.model
    if protocol is not None:
        routes = tuple(r for r in model.routes if r.protocol == protocol)
        if not routes:
            raise errors.ModelUnavailable(
                f"{model.model_id} has no {protocol} upstream route for this endpoint.",
                param="model",
            )
        if len(routes) != len(model.routes):
            model = dataclasses.replace(model, routes=routes)
    opened = await routing.open_upstream(model, build or json_builder(ex, operation), stream=stream)
    ex.route = opened.route
    return opened


def upstream_json(opened: routing.Opened) -> dict[str, Any]:
    """An upstream's non-stream answer as a JSON object, or UpstreamFailed."""
    try:
        data = orjson.loads(opened.response.content)
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamFailed(
            "The upstream answered with something that is not JSON."
        ) from exc
    if not isinstance(data, dict):
        raise errors.UpstreamFailed("The upstream answered with an unexpected JSON value.")
    return data


# --- answering -------------------------------------------------------------------------------


async def complete_chat(ex: Exchange) -> dict[str, Any]:
    """A non-stream chat answer in the caller's surface shape; sets the usage."""
    opened = await open_upstream(ex, "chat")
    out = answer(ex, upstream_json(opened), providers.wire_protocol(opened.route.protocol))
    ex.ttft_ms = ex.elapsed_ms()
    if ex.usage is not None and ex.usage.counted_by == "estimate" and opened.route.tokenizer:
        ex.usage = await count_missing_usage(ex, opened.route, _response_text(out, ex.surface))
        out["usage"] = ex.usage.to_openai() if ex.surface == OPENAI else ex.usage.to_anthropic()
    return out


def answer(ex: Exchange, data: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The upstream's answer in the caller's surface shape, with its usage (counted by our
    tokenizer and marked an estimate when the upstream gave none); sets ``ex.usage``."""
    assert ex.model is not None
    client_model = ex.client_model
    try:
        if protocol == ex.surface:
            data["model"] = client_model
            out = data
        elif ex.surface == OPENAI:
            out = tresp.anthropic_to_openai(data, model=client_model)
        else:
            out = tresp.openai_to_anthropic(
                data, model=client_model, stop_sequences=ex.body.get("stop_sequences")
            )
    except (TranslationError, TypeError, KeyError, AttributeError, ValueError) as exc:
        raise errors.UpstreamFailed(
            f"The upstream's answer could not be translated: {exc}"
        ) from exc
    reported = data.get("usage")
    usage = Usage.from_openai(reported) if protocol == OPENAI else Usage.from_anthropic(reported)
    if usage is None:
        usage = estimate_usage(ex, _response_text(out, ex.surface))
        out["usage"] = usage.to_openai() if ex.surface == OPENAI else usage.to_anthropic()
    ex.usage = usage
    return out


async def embed(ex: Exchange, *, counted_tokens: int) -> dict[str, Any]:
    """An embeddings answer; its usage is the upstream's, else ``counted_tokens`` (estimated)."""
    assert ex.model is not None
    data = upstream_json(await open_upstream(ex, "embeddings", protocol=OPENAI))
    reported = Usage.from_openai(data.get("usage"))
    if reported is not None and reported.input_tokens:
        ex.usage = Usage(input_tokens=reported.input_tokens)
    else:
        ex.usage = Usage(input_tokens=counted_tokens, is_estimate=True)
    data["model"] = ex.client_model
    data["usage"] = {"prompt_tokens": ex.usage.input_tokens, "total_tokens": ex.usage.input_tokens}
    ex.ttft_ms = ex.elapsed_ms()
    return data


def estimate_usage(ex: Exchange, output_text: str, *, known: Usage | None = None) -> Usage:
    """Usage counted with our tokenizer where the upstream gave none (marked as an estimate)."""
    input_tokens = (
        known.input_tokens if known and known.input_tokens else tokens.count_request(ex.body)
    )
    output_tokens = tokens.count_text(output_text)
    if known is not None and known.output_tokens > output_tokens:
        output_tokens = known.output_tokens
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=known.cached_tokens if known else 0,
        is_estimate=True,
        counted_by="estimate",
    )


async def count_missing_usage(
    ex: Exchange, route: RouteInfo, output_text: str, *, known: Usage | None = None
) -> Usage:
    """The usage of an answer the upstream sent without one: counted by the upstream's own
    tokenizer where its provider names one (``tokenizers``, bounded in time), else estimated."""
    if route.protocol == OPENAI and route.tokenizer in tokenizers.KINDS:
        messages = upstream_body(ex, route).get("messages")
        headers = get_provider(route.protocol).headers(route, {})
        headers.pop("accept", None)
        counted = await tokenizers.count(
            route, messages if isinstance(messages, list) else [], output_text, headers
        )
        if counted is not None:
            return Usage(
                input_tokens=counted[0],
                output_tokens=counted[1],
                counted_by=f"tokenizer:{route.tokenizer}",
            )
    return estimate_usage(ex, output_text, known=known)


def _response_text(out: dict[str, Any], surface: str) -> str:
    parts: list[str] = []
    if surface == OPENAI:
        for choice in out.get("choices") or []:
            message = choice.get("message") or {}
            parts.append(str(message.get("content") or ""))
            parts.append(str(message.get("reasoning_content") or ""))
            for call in message.get("tool_calls") or []:
                parts.append(str((call.get("function") or {}).get("arguments") or ""))
    else:
        for block in out.get("content") or []:
            parts.append(str(block.get("text") or block.get("thinking") or ""))
            if block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input") or {}).decode())
    return "".join(parts)


def reply(ex: Exchange, content: bytes, content_type: str = "application/json") -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    for name, value in ex.headers().items():
        response[name] = value
    return response


def reply_json(ex: Exchange, data: dict[str, Any]) -> HttpResponse:
    return reply(ex, orjson.dumps(data))


def reply_stream(
    ex: Exchange, parts: AsyncIterator[bytes], content_type: str = "text/event-stream"
) -> StreamingHttpResponse:
    headers = _SSE_HEADERS if content_type == "text/event-stream" else None
    response = StreamingHttpResponse(parts, content_type=content_type, headers=headers)
    for name, value in ex.headers().items():
        response[name] = value
    return response


# --- streams: their bodies settle the request when they end ----------------------------------


async def open_chat_stream(
    ex: Exchange,
    *,
    operation: str = "chat",
    build: routing.BuildFn | None = None,
    protocol: str | None = None,
) -> AsyncIterator[bytes]:
    """Open a streamed chat answer and return its bytes in the caller's surface protocol. The
    upstream's first bytes are awaited first, so a failure this early still reaches the caller
    as a proper status; after that the stream settles the request when it ends (also when the
    client hangs up: what was delivered is billed). ``operation``, ``build``, ``protocol``: an
    OpenAI-style stream of another endpoint (legacy completions), relayed the same way."""
    opened = await open_upstream(ex, operation, build=build, protocol=protocol, stream=True)
    stream_relay = relay.for_protocol(ex, providers.wire_protocol(opened.route.protocol))
    # Decoded bytes: an upstream may gzip its stream even when asked not to.
    chunks = transport.body_chunks(opened.response)
    try:
        first = await chunks.__anext__()
    except (StopAsyncIteration, httpx.HTTPError) as exc:
        await opened.response.aclose()
        raise errors.UpstreamFailed(
            "The upstream closed the stream before sending anything."
        ) from exc
    deadline = ex.started + opened.route.total_timeout_s
    ex.handed_off = True
    return _chat_stream(ex, opened.response, chunks, first, stream_relay, deadline)


async def _chat_stream(
    ex: Exchange,
    upstream: httpx.Response,
    chunks: AsyncIterator[bytes],
    first: bytes,
    stream_relay: relay.StreamRelay,
    deadline: float,
) -> AsyncIterator[bytes]:
    decoder = sse.SSEDecoder()
    try:
        pending: bytes | None = first
        while True:
            if pending is None:
                try:
                    pending = await chunks.__anext__()
                except StopAsyncIteration:
                    break
            # Everything that arrived in one read goes out in one write: chunk by chunk as the
            # upstream sends, without a write per event when it sends many at once.
            outs = [stream_relay.feed(event, data) for event, data in decoder.feed(pending)]
            out = b"".join(outs)
            if out:
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                yield out
            if stream_relay.finished or stream_relay.failed or stream_relay.awaiting_usage:
                # The protocol's end ([DONE], message_stop) or an error event: the caller's
                # stream ends now, not when the upstream gets round to ending its body.
                break
            pending = None
            if time.monotonic() > deadline:
                raise errors.UpstreamFailed("The upstream stream ran past the total timeout.")
        tail = stream_relay.finish()
        if tail:
            yield tail
        if stream_relay.awaiting_usage and ex.route is not None:
            # Ended without the upstream's usage: count it (the upstream's tokenizer, bounded,
            # else our estimate) and give the client the usage its protocol carries at the end.
            counted = await count_missing_usage(
                ex, ex.route, stream_relay.delivered_text(), known=stream_relay.usage
            )
            yield stream_relay.complete(counted)
    except httpx.HTTPError as exc:
        stream_relay.failed = True
        yield errors.stream_frame(
            errors.UpstreamFailed(f"The upstream stream broke off ({type(exc).__name__})."),
            ex.surface,
            ex.request_id,
        )
    except GatewayError as err:
        stream_relay.failed = True
        yield errors.stream_frame(err, ex.surface, ex.request_id)
    finally:
        if ex.admission is not None and limits.settles_inline(ex.admission):
            # In-process limits and metering: closing and settling never suspend, so nothing
            # can interrupt them, and a shielding task would cost the caller's last bytes two
            # trips round a busy event loop.
            await _close_chat_stream(ex, upstream, stream_relay)
        else:
            await asyncio.shield(_close_chat_stream(ex, upstream, stream_relay))


async def _close_chat_stream(
    ex: Exchange, upstream: httpx.Response, stream_relay: relay.StreamRelay
) -> None:
    try:
        if stream_relay.finished:
            await transport.close_finished(upstream)
        else:
            await upstream.aclose()
    finally:
        delivered = stream_relay.delivered_text()
        if stream_relay.failed and not delivered:
            ex.status, ex.error_code = _UPSTREAM_FAILED
            ex.usage = Usage()
        elif stream_relay.finished:
            # Ended normally: served (200). An upstream that reported no usage (none at all, no
            # input, or no output for text it did send) is billed on our count: nothing is
            # served at $0.
            reported = stream_relay.usage
            if (
                reported is None
                or not reported.input_tokens
                or (not reported.output_tokens and delivered)
            ):
                reported = estimate_usage(ex, delivered, known=reported)
            ex.usage = reported
        else:
            # Cut short (client hung up or the upstream broke): bill what was delivered.
            ex.usage = estimate_usage(ex, delivered, known=stream_relay.usage)
            if stream_relay.failed:
                ex.status, ex.error_code = _UPSTREAM_FAILED
            else:
                ex.status, ex.error_code = 499, "client_disconnected"
        await settle(ex)


async def open_byte_stream(
    ex: Exchange, operation: str, *, units: int, content_type: str
) -> tuple[str, AsyncIterator[bytes]]:
    """Open a binary answer (speech audio), passed through chunk by chunk as it arrives: its
    content type (the upstream's, else ``content_type``) and its bytes. Billed in full
    (``units``) once any of it reached the client (the upstream made it); nothing otherwise."""
    opened = await open_upstream(ex, operation, protocol=OPENAI, stream=True)
    ex.stream = True
    chunks = opened.response.aiter_raw()
    try:
        first = await chunks.__anext__()
    except (StopAsyncIteration, httpx.HTTPError) as exc:
        await opened.response.aclose()
        raise errors.UpstreamFailed(
            "The upstream closed the stream before sending anything."
        ) from exc
    ex.ttft_ms = ex.elapsed_ms()
    ex.units = units
    ex.handed_off = True
    content_type = opened.response.headers.get("content-type") or content_type
    return content_type, _byte_stream(ex, opened.response, chunks, first)


async def _byte_stream(
    ex: Exchange, upstream: httpx.Response, chunks: AsyncIterator[bytes], first: bytes
) -> AsyncIterator[bytes]:
    finished = failed = False
    try:
        yield first
        async for chunk in chunks:
            if chunk:
                yield chunk
        finished = True
    except httpx.HTTPError:
        failed = True
    finally:
        if failed:
            ex.status, ex.error_code = _UPSTREAM_FAILED
        elif not finished:
            ex.status, ex.error_code = 499, "client_disconnected"
        await asyncio.shield(_close_byte_stream(ex, upstream))


async def _close_byte_stream(ex: Exchange, upstream: httpx.Response) -> None:
    try:
        await upstream.aclose()
    finally:
        await settle(ex)
