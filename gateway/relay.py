"""Relaying one request from either surface to an upstream of either protocol and back: read and
check the body, authenticate, admit, send through the router, answer (streamed chunk by chunk or
whole), and settle what it cost, also when the client hangs up mid-stream."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from billing import money
from gateway import auth, auto, catalog, errors, limits, metering, routing, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo, RouteInfo
from gateway.errors import ANTHROPIC, OPENAI, GatewayError
from gateway.limits import Admission
from gateway.providers import Provider, transport
from gateway.tokens import Usage
from gateway.translate import requests as treq
from gateway.translate import responses as tresp
from gateway.translate import sse
from gateway.translate import streams as tstream
from gateway.translate.errors import TranslationError

logger = logging.getLogger("tokenfactory.gateway")

_ROLES = {
    OPENAI: ("system", "developer", "user", "assistant", "tool", "function"),
    ANTHROPIC: ("user", "assistant"),
}
_FORWARDED = ("anthropic-version", "anthropic-beta", "x-sim-options")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Our own generator: nobody else seeds it (test tools seed the module-level one), and each
# forked child (Celery's prefork pool) reseeds it from the OS.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A request's id: 96 random bits. Not a secret, but it keys the usage record's idempotency,
    so it must not repeat; a Mersenne Twister seeded from the OS costs no system call, where
    ``secrets`` costs a getrandom(2) per id (a measured 5% of the event loop's time)."""
    return f"req_{_ids.getrandbits(96):024x}"


@dataclass
class Exchange:
    """One request's journey, from the first byte in to the usage record."""

    surface: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    caller: Caller | None = None
    model: ModelInfo | None = None
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    route: RouteInfo | None = None
    admission: Admission | None = None
    usage: Usage | None = None
    ttft_ms: int | None = None
    status: int = 200
    error_code: str = ""
    forwarded: dict[str, str] = field(default_factory=dict)
    refusal_headers: dict[str, str] = field(default_factory=dict)
    endpoint: str = "chat"
    recorded: bool = False

    def headers(self) -> dict[str, str]:
        out = {"x-request-id": self.request_id}
        if self.surface == ANTHROPIC:
            out["request-id"] = self.request_id
        if self.admission is not None:
            out.update(self.admission.headers)
        else:
            out.update(self.refusal_headers)
        return out


# --- the request edge ------------------------------------------------------------------------


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
    return body


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
    return caller


async def resolve_model(body: dict[str, Any], caller: Caller, *, kind: str) -> ModelInfo:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("'model' is required and must be a string.", param="model")
    snap = await catalog.snapshot()
    if name == auto.AUTO:
        return auto.choose(snap, caller, body, kind=kind)
    model = snap.models.get(name)
    if model is None:
        raise errors.UnknownModel(
            f"The model '{name}' does not exist. GET /v1/models lists the models you can use.",
            param="model",
        )
    if model.kind != kind:
        raise errors.BadRequest(
            f"'{name}' is a {model.kind} model and cannot serve this endpoint.", param="model"
        )
    if not caller.may_use(model.model_id, model.tier):
        if caller.allowed_models and model.model_id not in caller.allowed_models:
            raise errors.Forbidden(
                f"This key may not use '{name}': it is limited to "
                f"{', '.join(sorted(caller.allowed_models))}.",
                param="model",
            )
        raise errors.Forbidden(
            f"Your plan ({caller.plan_name}) does not include '{name}' ({model.tier} tier). "
            "Upgrade your plan to use it.",
            param="model",
        )
    if not model.is_priced:
        raise errors.ModelUnavailable(
            f"'{name}' has no price set, so it cannot be served. Try another model.", param="model"
        )
    return model


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.BadRequest(f"'{name}' must be a positive integer.", param=name)
    return value


def check_chat(body: dict[str, Any], surface: str) -> tuple[bool, int | None]:
    """Shape checks the upstream cannot be trusted to make for us; returns (stream, max_tokens)."""
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
    return stream, max_tokens


def forwarded_headers(request: HttpRequest) -> dict[str, str]:
    return {name: value for name in _FORWARDED if (value := request.headers.get(name))}


# --- building the upstream request -----------------------------------------------------------


def upstream_body(ex: Exchange, route: RouteInfo) -> dict[str, Any]:
    """The body for ``route``'s protocol: passed through when it matches the surface (unknown
    fields kept), translated when it does not."""
    assert ex.model is not None
    body = ex.body
    try:
        if route.protocol == ex.surface:
            out = dict(body)
            out["model"] = route.upstream_model
            if ex.stream and route.protocol == OPENAI:
                options = dict(out.get("stream_options") or {})
                options["include_usage"] = True
                out["stream_options"] = options
            elif route.protocol == ANTHROPIC:
                # Thinking blocks we made from OpenAI reasoning carry no signature; clients send
                # them back and a real Anthropic upstream would refuse them.
                out = treq.strip_unsigned_thinking(out)
            return out
        if ex.surface == OPENAI:
            return treq.openai_to_anthropic(
                body,
                model=route.upstream_model,
                default_max_tokens=ex.model.max_output_tokens or 4096,
                max_output_tokens=ex.model.max_output_tokens or None,
            )
        out = treq.anthropic_to_openai(body, model=route.upstream_model)
        if ex.stream:
            out["stream_options"] = {"include_usage": True}
        return out
    except TranslationError as exc:
        raise errors.BadRequest(exc.message, param=exc.param) from exc
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise errors.BadRequest(f"The request is malformed: {exc}") from exc


def builder(ex: Exchange, operation: str) -> Callable[[RouteInfo, Provider], httpx.Request]:
    encoded: dict[tuple[str, str], bytes] = {}

    def build(route: RouteInfo, provider: Provider) -> httpx.Request:
        cache_key = (route.protocol, route.upstream_model)
        if cache_key not in encoded:
            encoded[cache_key] = orjson.dumps(upstream_body(ex, route))
        forwarded = ex.forwarded
        if "x-sim-options" in forwarded and not route.provider_slug.startswith("sim"):
            forwarded = {k: v for k, v in forwarded.items() if k != "x-sim-options"}
        return provider.build(route, operation, encoded[cache_key], forwarded)

    return build


# --- the chat endpoint, both surfaces --------------------------------------------------------


async def chat(request: HttpRequest, surface: str) -> HttpResponse | StreamingHttpResponse:
    ex = Exchange(surface=surface)
    try:
        check_size(request)
        ex.caller = await authenticate(request)
        ex.body = read_json(request)
        ex.model = await resolve_model(ex.body, ex.caller, kind="chat")
        ex.stream, max_tokens = check_chat(ex.body, surface)
        ex.forwarded = forwarded_headers(request)
        ex.forwarded["x-request-id"] = ex.request_id
        ceiling = min(
            max_tokens or ex.model.max_output_tokens or 4096, ex.model.max_output_tokens or 1 << 30
        )
        await admit(ex, request, tokens.estimate_request_tokens(len(request.body)), ceiling)
        if ex.stream:
            return await _stream(ex)
        return await _complete(ex)
    except GatewayError as err:
        return await _fail(ex, err)


async def admit(
    ex: Exchange,
    request: HttpRequest,
    input_tokens: int,
    ceiling: int,
    *,
    unit_cost_micros: int | None = None,
) -> None:
    """Ask limits to admit the request; a key changed since we cached it is reloaded first.
    ``unit_cost_micros``: a unit-priced request's cost, paid from the balance (see limits)."""
    assert ex.caller is not None and ex.model is not None
    for _ in range(2):
        try:
            ex.admission = await limits.admit(
                ex.caller,
                ex.model,
                input_tokens=input_tokens,
                max_output_tokens=ceiling,
                request_id=ex.request_id,
                surface=ex.surface,
                unit_cost_micros=unit_cost_micros,
            )
            return
        except limits.Stale:
            caller = await auth.authenticate(auth.bearer_from(request), refresh=True)
            if caller is None:
                ex.caller = None
                raise errors.Unauthorized(
                    "Invalid API key: it is unknown, revoked or expired."
                ) from None
            ex.caller = caller
            ex.model = await resolve_model(ex.body, caller, kind=ex.model.kind)
        except limits.Refused as refused:
            ex.refusal_headers = refused.headers
            raise refusal_error(refused, ex, unit_cost_micros=unit_cost_micros) from None
        except limits.Unavailable:
            raise errors.LimitsUnavailable(
                "Rate limits are unavailable right now (the limits store cannot be reached), so "
                "the request was not run. Retry in a few seconds.",
                retry_after=2,
            ) from None
    raise errors.ModelUnavailable("Admission kept finding the key changed; retry the request.")


_UNIT_NAMES = {"seconds": "second of audio", "characters": "million characters", "images": "image"}


def refusal_error(
    refused: limits.Refused, ex: Exchange, *, unit_cost_micros: int | None = None
) -> GatewayError:
    caller = ex.caller
    assert caller is not None
    if refused.reason == "rpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.rpm_limit} requests per minute for this key. "
            f"Retry after {refused.retry_after}s.",
            retry_after=refused.retry_after,
        )
    if refused.reason == "tpm":
        return errors.RateLimited(
            f"Rate limit exceeded: {caller.tpm_limit:,} tokens per minute for this key "
            f"(a request reserves its input plus max_tokens). Retry after {refused.retry_after}s, "
            "or lower max_tokens.",
            retry_after=refused.retry_after,
        )
    if refused.reason == "budget":
        return errors.TokenBudgetExceeded(
            f"Your {caller.plan_name} token window is spent and your balance is empty. It resets "
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
        "reservation (input plus max_tokens at the model's prices). Top up your balance, or "
        "lower max_tokens."
    )


async def _fail(ex: Exchange, err: GatewayError) -> HttpResponse:
    ex.status = err.status
    ex.error_code = err.code or err.type
    await _finish(ex)
    response = errors.response(err, ex.surface, ex.request_id)
    for name, value in ex.headers().items():
        response[name] = value
    if err.status >= 500:
        logger.warning(
            "upstream failure",
            extra={"request_id": ex.request_id, "status": err.status, "error": err.message},
        )
    return response


def upstream_json(content: bytes) -> dict[str, Any]:
    """An upstream's non-stream answer as a JSON object, or UpstreamFailed."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamFailed(
            "The upstream answered with something that is not JSON."
        ) from exc
    if not isinstance(data, dict):
        raise errors.UpstreamFailed("The upstream answered with an unexpected JSON value.")
    return data


def answer(ex: Exchange, data: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The upstream's answer in the caller's surface shape, with its usage (counted by our
    tokenizer and marked an estimate when the upstream gave none); sets ``ex.usage``."""
    assert ex.model is not None
    client_model = ex.model.model_id
    try:
        if protocol == ex.surface:
            data["model"] = client_model
            out = data
        elif ex.surface == OPENAI:
            out = tresp.anthropic_to_openai(data, model=client_model)
        else:
            out = tresp.openai_to_anthropic(data, model=client_model)
    except (TranslationError, TypeError, KeyError, AttributeError, ValueError) as exc:
        raise errors.UpstreamFailed(
            f"The upstream's answer could not be translated: {exc}"
        ) from exc
    reported = data.get("usage")
    usage = Usage.from_openai(reported) if protocol == OPENAI else Usage.from_anthropic(reported)
    if usage is None:
        usage = _estimate(ex, _response_text(out, ex.surface))
        out["usage"] = usage.to_openai() if ex.surface == OPENAI else usage.to_anthropic()
    ex.usage = usage
    return out


async def _complete(ex: Exchange) -> HttpResponse:
    assert ex.model is not None
    opened = await routing.open_upstream(ex.model, builder(ex, "chat"), stream=False)
    ex.route = opened.route
    out = answer(ex, upstream_json(opened.response.content), opened.route.protocol)
    ex.ttft_ms = _elapsed_ms(ex)
    await _finish(ex)
    response = HttpResponse(orjson.dumps(out), content_type="application/json")
    for name, value in ex.headers().items():
        response[name] = value
    return response


async def _stream(ex: Exchange) -> StreamingHttpResponse:
    assert ex.model is not None
    opened = await routing.open_upstream(ex.model, builder(ex, "chat"), stream=True)
    ex.route = opened.route
    relay = _relay_for(ex, opened.route.protocol)
    # Decoded bytes: an upstream may gzip its stream even when asked not to.
    chunks = transport.body_chunks(opened.response)
    # Wait for the upstream's first bytes before committing to a 200, so a failure this early
    # still reaches the caller as a proper status.
    try:
        first = await chunks.__anext__()
    except (StopAsyncIteration, httpx.HTTPError) as exc:
        await opened.response.aclose()
        raise errors.UpstreamFailed(
            "The upstream closed the stream before sending anything."
        ) from exc
    deadline = ex.started + opened.route.total_timeout_s

    async def body() -> AsyncIterator[bytes]:
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
                outs = [relay.feed(event, data) for event, data in decoder.feed(pending)]
                out = b"".join(outs)
                if out:
                    if ex.ttft_ms is None:
                        ex.ttft_ms = _elapsed_ms(ex)
                    yield out
                if relay.finished or relay.failed:
                    # The protocol's end ([DONE], message_stop) or an error event: the caller's
                    # stream ends now, not when the upstream gets round to ending its body.
                    break
                pending = None
                if time.monotonic() > deadline:
                    raise errors.UpstreamFailed("The upstream stream ran past the total timeout.")
            tail = relay.finish()
            if tail:
                yield tail
        except httpx.HTTPError as exc:
            relay.failed = True
            yield errors.stream_frame(
                errors.UpstreamFailed(f"The upstream stream broke off ({type(exc).__name__})."),
                ex.surface,
                ex.request_id,
            )
        except GatewayError as err:
            relay.failed = True
            yield errors.stream_frame(err, ex.surface, ex.request_id)
        finally:
            if ex.admission is not None and limits.settles_inline(ex.admission):
                # In-process limits and metering: closing and settling never suspend, so nothing
                # can interrupt them, and a shielding task would cost the caller's last bytes two
                # trips round a busy event loop.
                await _close_stream(ex, opened.response, relay)
            else:
                await asyncio.shield(_close_stream(ex, opened.response, relay))

    response = StreamingHttpResponse(body(), content_type="text/event-stream", headers=_SSE_HEADERS)
    for name, value in ex.headers().items():
        response[name] = value
    return response


async def _close_stream(ex: Exchange, upstream: httpx.Response, relay: StreamRelay) -> None:
    try:
        if relay.finished:
            await transport.close_finished(upstream)
        else:
            await upstream.aclose()
    finally:
        if relay.failed and not relay.delivered_text():
            ex.status, ex.error_code = 502, "upstream_error"
            ex.usage = Usage()
        elif relay.usage is not None and relay.finished:
            ex.usage = relay.usage
        else:
            # Cut short (client hung up or the upstream broke): bill what was delivered.
            ex.usage = _estimate(ex, relay.delivered_text(), known=relay.usage)
            if relay.failed:
                ex.status, ex.error_code = 502, "upstream_error"
            else:
                ex.status, ex.error_code = 499, "client_disconnected"
        await _finish(ex)


async def _finish(ex: Exchange, *, cost_micros: int | None = None) -> None:
    """Settle the reservation and write the usage record: exactly once per request.

    ``cost_micros`` replaces the token price for unit-priced models (seconds, characters,
    images)."""
    if ex.recorded:
        return
    ex.recorded = True
    usage = ex.usage or Usage()
    cost = 0
    if cost_micros is not None:
        cost = cost_micros
    elif ex.model is not None and usage.total_tokens and ex.model.is_priced:
        cost = money.token_cost_micros(
            input_tokens=usage.input_tokens,
            cached_tokens=usage.cached_tokens,
            output_tokens=usage.output_tokens,
            input_price_micros=ex.model.input_price_micros or 0,
            output_price_micros=ex.model.output_price_micros or 0,
            cached_input_price_micros=ex.model.cached_input_price_micros,
        )
    if ex.caller is None:
        return
    admission = ex.admission
    billed = cost if admission is not None and admission.paid else 0
    record = usage_record(ex, cost_micros=cost, billed_micros=billed)
    if admission is not None:
        await limits.settle(
            admission, tokens=usage.total_tokens, billed_micros=billed, record=record
        )
    else:
        await metering.record_unadmitted(record)


def usage_record(
    ex: Exchange, *, cost_micros: int, billed_micros: int, batch_id: str = ""
) -> metering.UsageRecord:
    """The usage record of a request that has ended (the only place one is made from a request)."""
    usage = ex.usage or Usage()
    return metering.UsageRecord(
        request_id=ex.request_id,
        account_id=ex.caller.account_id if ex.caller else 0,
        key_id=ex.caller.key_id if ex.caller else None,
        surface=ex.surface,
        endpoint=ex.endpoint,
        model=ex.model.model_id if ex.model else str(ex.body.get("model", ""))[:200],
        route=f"{ex.route.provider_slug}:{ex.route.upstream_model}" if ex.route else "",
        status=ex.status,
        error_code=ex.error_code,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        is_estimate=usage.is_estimate,
        cost_micros=cost_micros,
        billed_micros=billed_micros,
        in_window=not (ex.admission is not None and ex.admission.paid),
        latency_ms=_elapsed_ms(ex),
        ttft_ms=ex.ttft_ms,
        stream=ex.stream,
        batch_id=batch_id,
        created_at_ms=int(time.time() * 1000),
    )


def _elapsed_ms(ex: Exchange) -> int:
    return int((time.monotonic() - ex.started) * 1000)


def _estimate(ex: Exchange, output_text: str, *, known: Usage | None = None) -> Usage:
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
    )


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


# --- stream relays: one per (surface, upstream protocol) -------------------------------------


class StreamRelay:
    """Turns upstream SSE events into bytes for the client and keeps what billing needs."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.client_model = ex.model.model_id if ex.model else ""
        self.usage: Usage | None = None
        self.finished = False
        self.failed = False
        self._text: list[str] = []

    def delivered_text(self) -> str:
        return "".join(self._text)

    def feed(self, event: str | None, data: str) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    def _error_frame(self, message: str) -> bytes:
        self.failed = True
        return errors.stream_frame(
            errors.UpstreamFailed(message), self.ex.surface, self.ex.request_id
        )


class OpenAIPassthrough(StreamRelay):
    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        options = ex.body.get("stream_options")
        self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.saw_finish = False

    def feed(self, event: str | None, data: str) -> bytes:
        if self.finished or self.failed:
            return b""
        if data == "[DONE]":
            self.finished = self.saw_finish
            return (
                sse.DONE
                if self.saw_finish
                else self._error_frame("The upstream stream ended early.")
            )
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if chunk.get("error"):
            self.failed = True
            return sse.encode_openai(chunk)
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
            if not self.client_wants_usage:
                if not chunk.get("choices"):
                    return b""
                chunk.pop("usage")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self._text.append(content)
            reasoning = delta.get("reasoning_content")
            if reasoning:
                self._text.append(reasoning)
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if arguments:
                    self._text.append(arguments)
            if choice.get("finish_reason"):
                self.saw_finish = True
        chunk["model"] = self.client_model
        return sse.encode_openai(chunk)

    def finish(self) -> bytes:
        if self.finished or self.failed:
            return b""
        if self.saw_finish:
            # Some servers end without [DONE] after a proper finish; finish the stream for them.
            self.finished = True
            return sse.DONE
        return self._error_frame("The upstream stream ended before it finished.")


class AnthropicPassthrough(StreamRelay):
    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        self.start_usage: dict[str, Any] = {}

    def feed(self, event: str | None, data: str) -> bytes:
        if self.finished or self.failed:
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        kind = event or str(obj.get("type", ""))
        if kind == "message_start":
            message = obj.get("message") or {}
            message["model"] = self.client_model
            self.start_usage = dict(message.get("usage") or {})
            self.usage = Usage.from_anthropic(self.start_usage)
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            piece = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            if piece:
                self._text.append(piece)
        elif kind == "message_delta":
            merged = {**self.start_usage, **(obj.get("usage") or {})}
            self.usage = Usage.from_anthropic(merged)
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.failed = True
        return sse.encode_anthropic(kind, obj)

    def finish(self) -> bytes:
        if self.finished or self.failed:
            return b""
        return self._error_frame("The upstream stream ended before message_stop.")


class AnthropicToOpenAIRelay(StreamRelay):
    """An Anthropic upstream, an OpenAI-surface client."""

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        options = ex.body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.translator = tstream.AnthropicToOpenAI(
            model=self.client_model, include_usage=wants_usage
        )

    def feed(self, event: str | None, data: str) -> bytes:
        if self.finished or self.failed:
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        kind = event or str(obj.get("type", ""))
        out = self.translator.feed(kind, obj)
        self._track(kind, obj)
        return b"".join(sse.encode_openai(chunk) for chunk in out) + (
            sse.DONE if self.finished else b""
        )

    def _track(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            piece = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            if piece:
                self._text.append(piece)
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.failed = True
        self.usage = self.translator.usage

    def finish(self) -> bytes:
        if self.finished or self.failed:
            return b""
        out = self.translator.finish()
        self.failed = True
        return b"".join(sse.encode_openai(chunk) for chunk in out)


class OpenAIToAnthropicRelay(StreamRelay):
    """An OpenAI-protocol upstream, an Anthropic-surface client."""

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        self.translator = tstream.OpenAIToAnthropic(
            model=self.client_model, input_tokens_estimate=tokens.count_request(ex.body)
        )

    def feed(self, event: str | None, data: str) -> bytes:
        if self.finished or self.failed:
            return b""
        if data == "[DONE]":
            events = self.translator.feed_done()
        else:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return b""
            if not isinstance(chunk, dict):
                return b""
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                for piece in (delta.get("content"), delta.get("reasoning_content")):
                    if piece:
                        self._text.append(piece)
                for call in delta.get("tool_calls") or ():
                    arguments = (call.get("function") or {}).get("arguments")
                    if arguments:
                        self._text.append(arguments)
            events = self.translator.feed(chunk)
        return self._encode(events)

    def _encode(self, events: list[tuple[str, dict[str, Any]]]) -> bytes:
        out = []
        for name, obj in events:
            if name == "message_stop":
                self.finished = True
            elif name == "error":
                self.failed = True
            out.append(sse.encode_anthropic(name, obj))
        self.usage = self.translator.usage
        return b"".join(out)

    def finish(self) -> bytes:
        if self.finished or self.failed:
            return b""
        return self._encode(self.translator.finish())


def _relay_for(ex: Exchange, protocol: str) -> StreamRelay:
    if ex.surface == OPENAI:
        return OpenAIPassthrough(ex) if protocol == OPENAI else AnthropicToOpenAIRelay(ex)
    return AnthropicPassthrough(ex) if protocol == ANTHROPIC else OpenAIToAnthropicRelay(ex)
