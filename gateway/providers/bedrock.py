"""AWS Bedrock upstreams, through the Converse API.

The pipeline talks to this provider in the Anthropic Messages shape (``speaks``): it gets an
Anthropic request body (translated from the OpenAI surface like for any Anthropic upstream) and
gives back an Anthropic answer or Anthropic SSE events. Here that body becomes a Converse request
(``POST /model/{modelId}/converse``, or ``/converse-stream`` when ``stream`` is set), signed with
SigV4 (botocore), and the Converse answer, or its AWS event-stream (decoded with botocore's
parser), becomes the Anthropic one again. Everything Bedrock-specific stays in this module.

Credentials: the provider's API key (``api_key`` or the variable named by ``api_key_env``) as
``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` or ``ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN``; without
one, botocore's standard chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, shared config files, an instance or task role). With the auth style
``bearer`` the key is a Bedrock API key sent as ``Authorization: Bearer`` and nothing is signed.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, unquote

import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamError
from botocore.session import Session

from gateway import errors
from gateway.catalog import RouteInfo
from gateway.providers.base import Provider, UpstreamError, request_timeouts
from gateway.providers.transport import body_chunks

SIGNING_NAME = "bedrock"
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "max_tokens",
}
# Bedrock's exception names as Anthropic error types (the SDKs read the type).
ERROR_TYPES = {
    "throttlingException": "rate_limit_error",
    "serviceUnavailableException": "overloaded_error",
    "validationException": "invalid_request_error",
}


# --- credentials and signing ------------------------------------------------------------------


@functools.cache
def _default_credentials() -> Credentials | None:
    """botocore's standard chain, looked up once per process (it may ask an instance's metadata
    service); refreshable credentials refresh themselves."""
    return Session().get_credentials()


def credentials(api_key: str) -> Credentials:
    if api_key:
        parts = api_key.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise UpstreamError(
                "the Bedrock provider's key must be ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                "[:SESSION_TOKEN]",
                status=401,
                retryable=False,
            )
        return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    found = _default_credentials()
    if found is None:
        raise UpstreamError(
            "no AWS credentials: set the provider's key or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY",
            status=401,
            retryable=False,
        )
    return found


def region_of(route: RouteInfo) -> str:
    if route.region:
        return route.region
    found = re.search(r"\.([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com", route.base_url)
    return found.group(1) if found else "us-east-1"


def auth_headers(
    route: RouteInfo, method: str, url: str, body: bytes, headers: Mapping[str, str]
) -> dict[str, str]:
    """The headers that authenticate one request: SigV4 (``authorization``, ``x-amz-date``,
    ``x-amz-security-token``), or a Bedrock API key as a bearer token."""
    if route.auth_style == "bearer":
        return {"authorization": f"Bearer {route.api_key}"} if route.api_key else {}
    signed = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    creds = credentials(route.api_key).get_frozen_credentials()
    SigV4Auth(creds, SIGNING_NAME, region_of(route)).add_auth(signed)
    return {k.lower(): v for k, v in signed.headers.items()}


# --- Anthropic Messages -> Converse -----------------------------------------------------------


def _bad(message: str, param: str = "messages") -> errors.BadRequest:
    return errors.BadRequest(f"{message} (AWS Bedrock's Converse API)", param=param)


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") != "base64":
        raise _bad("Images must be sent inline (base64): Bedrock does not fetch image URLs")
    fmt = IMAGE_FORMATS.get(str(source.get("media_type")))
    if fmt is None:
        raise _bad(f"Unsupported image type {source.get('media_type')!r}")
    return {"image": {"format": fmt, "source": {"bytes": source.get("data", "")}}}


def _document(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "text":
        return {"text": str(source.get("data") or "")}
    if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
        raise _bad("Documents must be inline PDF (base64) or text")
    name = re.sub(r"[^A-Za-z0-9 ()\[\]-]", " ", str(block.get("title") or "document")).strip()
    return {
        "document": {
            "format": "pdf",
            "name": name or "document",
            "source": {"bytes": source.get("data", "")},
        }
    }


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"text": content})
    elif isinstance(content, list):
        for item in content:
            if item.get("type") == "text":
                parts.append({"text": str(item.get("text") or "")})
            elif item.get("type") == "image":
                parts.append(_image(item))
            elif item.get("type") == "document":
                parts.append(_document(item))
    result: dict[str, Any] = {
        "toolUseId": block.get("tool_use_id"),
        "content": parts or [{"text": ""}],
    }
    if block.get("is_error"):
        result["status"] = "error"
    return {"toolResult": result}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            if block.get("text"):
                out.append({"text": block["text"]})
        elif kind == "image":
            out.append(_image(block))
        elif kind == "document":
            out.append(_document(block))
        elif kind == "tool_use":
            out.append(
                {
                    "toolUse": {
                        "toolUseId": block.get("id"),
                        "name": block.get("name"),
                        "input": block.get("input") or {},
                    }
                }
            )
        elif kind == "tool_result":
            out.append(_tool_result(block))
        elif kind == "thinking":
            text = {"text": block.get("thinking") or ""}
            if block.get("signature"):
                text["signature"] = block["signature"]
            out.append({"reasoningContent": {"reasoningText": text}})
        elif kind == "redacted_thinking":
            out.append({"reasoningContent": {"redactedContent": block.get("data") or ""}})
        else:
            raise _bad(f"Content blocks of type {kind!r} cannot be sent")
        if isinstance(block, dict) and block.get("cache_control"):
            out.append({"cachePoint": {"type": "default"}})
    return out


def to_converse(body: dict[str, Any], *, upstream_model: str = "") -> dict[str, Any]:
    """An Anthropic Messages request as a Converse request (the model id goes in the URL)."""
    out: dict[str, Any] = {
        "messages": [
            {"role": m.get("role"), "content": _blocks(m.get("content"))}
            for m in body.get("messages") or ()
        ]
    }
    system = body.get("system")
    if system:
        out["system"] = _blocks(system)
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("max_tokens", "maxTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("stop_sequences", "stopSequences"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    if config:
        out["inferenceConfig"] = config
    extra: dict[str, Any] = {}
    if body.get("top_k") is not None:
        extra["top_k"] = body["top_k"]
    if isinstance(body.get("thinking"), dict):
        extra["thinking"] = body["thinking"]
    if extra:
        out["additionalModelRequestFields"] = extra
    if body.get("stop_sequences") and "anthropic." in upstream_model:
        # Anthropic models on Bedrock say which stop sequence ended the text when asked.
        out["additionalModelResponseFieldPaths"] = ["/stop_sequence"]
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    if tools and choice.get("type") != "none":
        specs = []
        for tool in tools:
            spec: dict[str, Any] = {
                "name": tool.get("name"),
                "inputSchema": {"json": tool.get("input_schema") or {"type": "object"}},
            }
            if tool.get("description"):
                spec["description"] = tool["description"]
            specs.append({"toolSpec": spec})
        tool_config: dict[str, Any] = {"tools": specs}
        kind = choice.get("type")
        if kind == "any":
            tool_config["toolChoice"] = {"any": {}}
        elif kind == "tool":
            tool_config["toolChoice"] = {"tool": {"name": choice.get("name")}}
        elif kind == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        out["toolConfig"] = tool_config
    return out


# --- Converse -> Anthropic Messages -----------------------------------------------------------


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Converse's usage as Anthropic's: input, cache reads and cache writes are disjoint."""
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("inputTokens") or 0),
        "output_tokens": int(usage.get("outputTokens") or 0),
        "cache_read_input_tokens": int(usage.get("cacheReadInputTokens") or 0),
        "cache_creation_input_tokens": int(usage.get("cacheWriteInputTokens") or 0),
    }


def _stop(reason: Any, fields: Any) -> tuple[str, str | None]:
    stop_reason = STOP_REASONS.get(str(reason), "end_turn")
    sequence = fields.get("stop_sequence") if isinstance(fields, dict) else None
    if isinstance(sequence, str) and sequence:
        return "stop_sequence", sequence
    return stop_reason, None


def from_converse(data: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A Converse answer as an Anthropic Messages answer."""
    message = (data.get("output") or {}).get("message") or {}
    content: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if "text" in block:
            content.append({"type": "text", "text": block["text"]})
        elif "toolUse" in block:
            use = block["toolUse"]
            content.append(
                {
                    "type": "tool_use",
                    "id": use.get("toolUseId"),
                    "name": use.get("name"),
                    "input": use.get("input") or {},
                }
            )
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]
            if "redactedContent" in reasoning:
                content.append({"type": "redacted_thinking", "data": reasoning["redactedContent"]})
            else:
                text = reasoning.get("reasoningText") or {}
                content.append(
                    {
                        "type": "thinking",
                        "thinking": text.get("text") or "",
                        "signature": text.get("signature") or "",
                    }
                )
    stop_reason, sequence = _stop(data.get("stopReason"), data.get("additionalModelResponseFields"))
    return {
        "id": f"msg_bdrk_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(data.get("usage")),
    }


def _sse(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class ConverseStream:
    """Converse stream events (decoded event-stream messages) as Anthropic SSE bytes."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.started: dict[int, str] = {}  # block index -> Anthropic block type
        self.stop: tuple[str, str | None] = ("end_turn", None)
        self.done = False

    def _start_block(self, index: int, block: dict[str, Any]) -> bytes:
        self.started[index] = str(block["type"])
        return _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )

    def feed(self, kind: str, event: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        index = int(event.get("contentBlockIndex") or 0)
        if kind == "messageStart":
            message: dict[str, Any] = {
                "id": f"msg_bdrk_{secrets.token_hex(12)}",
                "type": "message",
                "role": event.get("role") or "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                # Converse tells the usage only at the end (metadata); message_delta has it.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return _sse("message_start", {"type": "message_start", "message": message})
        if kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse") or {}
            return self._start_block(
                index,
                {
                    "type": "tool_use",
                    "id": use.get("toolUseId"),
                    "name": use.get("name"),
                    "input": {},
                },
            )
        if kind == "contentBlockDelta":
            return self._delta(index, event.get("delta") or {})
        if kind == "contentBlockStop":
            if index not in self.started:
                return b""
            return _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        if kind == "messageStop":
            self.stop = _stop(event.get("stopReason"), event.get("additionalModelResponseFields"))
            return b""
        if kind == "metadata":
            return self._end(anthropic_usage(event.get("usage")))
        return b""

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        out = b""
        if "text" in delta:
            if index not in self.started:
                out += self._start_block(index, {"type": "text", "text": ""})
            body = {"type": "text_delta", "text": delta["text"]}
        elif "toolUse" in delta:
            body = {"type": "input_json_delta", "partial_json": delta["toolUse"].get("input", "")}
        elif "reasoningContent" in delta:
            reasoning = delta["reasoningContent"]
            if "redactedContent" in reasoning:
                return self._start_block(
                    index, {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
                )
            if index not in self.started:
                block = {"type": "thinking", "thinking": "", "signature": ""}
                out += self._start_block(index, block)
            if "signature" in reasoning:
                body = {"type": "signature_delta", "signature": reasoning["signature"]}
            else:
                body = {"type": "thinking_delta", "thinking": reasoning.get("text") or ""}
        else:
            return out
        return out + _sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": body}
        )

    def _end(self, usage: dict[str, int] | None) -> bytes:
        self.done = True
        stop_reason, sequence = self.stop
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": sequence},
        }
        if usage is not None:
            delta["usage"] = usage
        return _sse("message_delta", delta) + _sse("message_stop", {"type": "message_stop"})

    def finish(self, *, stopped: bool) -> bytes:
        """The upstream's body ended: an answer whose messageStop came but no metadata still
        ends properly (its usage is counted by the gateway); otherwise nothing is added."""
        if self.done or not stopped:
            return b""
        return self._end(None)

    def error(self, kind: str, message: str) -> bytes:
        self.done = True
        return _sse(
            "error",
            {
                "type": "error",
                "error": {"type": ERROR_TYPES.get(kind, "api_error"), "message": message},
            },
        )


class _AnthropicEvents(httpx.AsyncByteStream):
    """A Converse event-stream body, re-framed as Anthropic SSE as it arrives."""

    def __init__(self, upstream: httpx.Response, model: str) -> None:
        self.upstream = upstream
        self.model = model

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = EventStreamBuffer()
        converter = ConverseStream(model=self.model)
        stopped = False
        async for chunk in body_chunks(self.upstream):
            buffer.add_data(chunk)
            out = b""
            try:
                for message in buffer:
                    headers = message.headers
                    try:
                        payload = orjson.loads(message.payload) if message.payload else {}
                    except orjson.JSONDecodeError:
                        payload = {}
                    if headers.get(":message-type") == "event":
                        kind = str(headers.get(":event-type") or "")
                        stopped = stopped or kind == "messageStop"
                        out += converter.feed(kind, payload if isinstance(payload, dict) else {})
                    else:
                        kind = str(headers.get(":exception-type") or headers.get(":error-code"))
                        text = payload.get("message") if isinstance(payload, dict) else None
                        out += converter.error(kind, str(text or kind))
            except EventStreamError:
                out += converter.error("api_error", "The upstream's event stream was corrupt.")
            if out:
                yield out
            if converter.done:
                return
        tail = converter.finish(stopped=stopped)
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self.upstream.aclose()


class BedrockProvider(Provider):
    protocol = "bedrock"
    speaks = "anthropic"
    paths = {"chat": "/converse"}

    def headers(self, route: RouteInfo, forwarded: Mapping[str, str]) -> dict[str, str]:
        return {}

    def build(
        self, route: RouteInfo, operation: str, body: bytes, forwarded: Mapping[str, str]
    ) -> httpx.Request:
        if operation != "chat":
            raise errors.ModelUnavailable(f"AWS Bedrock routes do not serve {operation}.")
        request = orjson.loads(body)
        stream = bool(request.get("stream"))
        converse = orjson.dumps(to_converse(request, upstream_model=route.upstream_model))
        action = "converse-stream" if stream else "converse"
        url = f"{route.base_url}/model/{quote(route.upstream_model, safe='')}/{action}"
        headers = {
            "content-type": "application/json",
            "accept": "application/vnd.amazon.eventstream" if stream else "application/json",
        }
        for name, value in route.extra_headers:
            headers[name] = value
        headers.update(auth_headers(route, "POST", url, converse, headers))
        target, timeouts = request_timeouts(route, url)
        return httpx.Request(
            "POST",
            target,
            content=converse,
            headers=headers,
            extensions={"timeout": timeouts},
        )

    async def send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        response = await super().send(request, stream=stream)
        # The answer names the upstream model; the pipeline puts the caller's model id in.
        parts = request.url.raw_path.decode().split("?")[0].split("/")
        model = unquote(parts[2]) if len(parts) > 2 else ""
        if stream:
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=_AnthropicEvents(response, model),
                request=request,
            )
        try:
            data = orjson.loads(response.content)
            out = from_converse(data, model=model)
        except (orjson.JSONDecodeError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(
                f"Bedrock's answer could not be read ({type(exc).__name__})",
                status=502,
                retryable=False,
            ) from exc
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            content=orjson.dumps(out),
            request=request,
        )

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict):
            for name in ("message", "Message"):
                if isinstance(body.get(name), str):
                    return str(body[name])
        return ""
