"""The stream relays: one per (client surface, upstream protocol), each turning the upstream's
SSE events into the bytes the client's SDK expects, and keeping what billing needs (usage, the
text delivered, whether the stream finished or failed). The request pipeline
(``gateway/exchange.py``) opens the stream, drives a relay and settles what it kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gateway import errors, tokens
from gateway.errors import ANTHROPIC, OPENAI
from gateway.tokens import Usage
from gateway.translate import sse
from gateway.translate import streams as tstream

if TYPE_CHECKING:
    from gateway.exchange import Exchange


class StreamRelay:
    """Turns upstream SSE events into bytes for the client and keeps what billing needs."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.client_model = ex.client_model
        self.usage: Usage | None = None
        self.finished = False
        self.failed = False
        # The protocol's end came without usage: the relay holds back the events that carry it
        # (OpenAI's usage chunk and [DONE], Anthropic's message_delta and message_stop) until the
        # pipeline has counted it and calls ``complete``.
        self.awaiting_usage = False
        self._text: list[str] = []

    def delivered_text(self) -> str:
        return "".join(self._text)

    def feed(self, event: str | None, data: str) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    def complete(self, usage: Usage) -> bytes:
        """The held-back end of the stream, with ``usage`` counted by the pipeline."""
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
        self._head: dict[str, Any] = {}

    def _end(self) -> bytes:
        """A clean end ([DONE], or the body's end after a finish_reason)."""
        self.finished = True
        if self.usage is None:
            self.awaiting_usage = True
            return b""
        return sse.DONE

    def complete(self, usage: Usage) -> bytes:
        self.usage, self.awaiting_usage = usage, False
        if not self.client_wants_usage:
            return sse.DONE
        chunk = {
            "id": self._head.get("id", ""),
            "object": "chat.completion.chunk",
            "created": self._head.get("created", 0),
            "model": self.client_model,
            "choices": [],
            "usage": usage.to_openai(),
        }
        return sse.encode_openai(chunk) + sse.DONE

    def feed(self, event: str | None, data: str) -> bytes:
        if self.finished or self.failed:
            return b""
        if data == "[DONE]":
            if self.saw_finish:
                return self._end()
            return self._error_frame("The upstream stream ended early.")
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if chunk.get("error"):
            self.failed = True
            return sse.encode_openai(chunk)
        if not self._head:
            self._head = {"id": chunk.get("id", ""), "created": chunk.get("created", 0)}
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
            if not self.client_wants_usage:
                if not chunk.get("choices"):
                    return b""
                chunk.pop("usage")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content") or choice.get("text")  # chat, or legacy completions
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
            return self._end()
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
            if isinstance(message.get("usage"), dict):
                self.start_usage = dict(message["usage"])
                self.usage = Usage.from_anthropic(self.start_usage)
            else:
                # An upstream that reports no usage: the client's SDK still needs the field (our
                # count); billing estimates when the stream closes (``self.usage`` stays None).
                message["usage"] = {
                    "input_tokens": tokens.count_request(self.ex.body),
                    "output_tokens": 0,
                }
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            piece = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            if piece:
                self._text.append(piece)
        elif kind == "message_delta":
            if isinstance(obj.get("usage"), dict):
                merged = {**self.start_usage, **obj["usage"]}
                self.usage = Usage.from_anthropic(merged)
            else:
                obj["usage"] = {"output_tokens": tokens.count_text(self.delivered_text())}
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
            model=self.client_model,
            input_tokens_estimate=tokens.count_request(ex.body),
            stop_sequences=ex.body.get("stop_sequences"),
            defer_missing_usage=True,
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
        self.awaiting_usage = self.translator.awaiting_usage
        return b"".join(out)

    def finish(self) -> bytes:
        if self.finished or self.failed or self.awaiting_usage:
            return b""
        return self._encode(self.translator.finish())

    def complete(self, usage: Usage) -> bytes:
        return self._encode(self.translator.complete(usage))


def for_protocol(ex: Exchange, protocol: str) -> StreamRelay:
    """The relay for a client on ``ex.surface`` and an upstream speaking ``protocol``."""
    if ex.surface == OPENAI:
        return OpenAIPassthrough(ex) if protocol == OPENAI else AnthropicToOpenAIRelay(ex)
    return AnthropicPassthrough(ex) if protocol == ANTHROPIC else OpenAIToAnthropicRelay(ex)
