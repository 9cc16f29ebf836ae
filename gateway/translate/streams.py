"""Streams from one protocol's events to the other's (OpenAI's chat completion chunks, Anthropic's
message events): small state machines fed one upstream event at a time, returning what to send
the client right away."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway import tokens
from gateway.tokens import Usage
from gateway.translate import ids
from gateway.translate.requests import JSON_TOOL_NAME
from gateway.translate.responses import (
    anthropic_usage,
    finish_reason,
    matched_stop_sequence,
    openai_usage,
    stop_reason,
)

ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "timeout_error",
        "overloaded_error",
        "api_error",
        "billing_error",
    }
)

Event = tuple[str, dict[str, Any]]  # an Anthropic SSE event: (name, data)
_DELTA_FIELDS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
    "signature_delta": "signature",
}


class AnthropicToOpenAI:
    """Anthropic upstream events -> OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = ids.completion_id()
        self.created = int(time.time())
        self.usage: Usage | None = None
        self._started = False
        self._ended = False
        self._sent_finish = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._json_blocks: set[int] = set()  # blocks of the response_format tool: plain content
        self._start_usage: dict[str, Any] = {}
        self._final_usage: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _role(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _update_usage(self) -> None:
        self.usage = Usage.from_anthropic({**self._start_usage, **self._final_usage})

    def feed(self, event: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        if self._ended or not isinstance(obj, dict):
            return []
        if event == "error":
            self._ended = True
            found = obj.get("error")
            error: dict[str, Any] = found if isinstance(found, dict) else {}
            return [_openai_error(str(error.get("message") or "The upstream failed."), error)]
        if event == "message_start":
            self._start_usage = dict(_obj(_obj(obj.get("message")).get("usage")))
            self._update_usage()
            return self._role()
        if event == "content_block_start":
            return self._role() + self._block_start(obj)
        if event == "content_block_delta":
            return self._role() + self._block_delta(obj)
        if event == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                # Cumulative totals: present values replace what message_start said.
                self._final_usage.update({k: v for k, v in usage.items() if v is not None})
                self._update_usage()
            reason = _obj(obj.get("delta")).get("stop_reason")
            if reason is None or self._sent_finish:
                return []
            return [*self._role(), self._finish(reason)]
        if event == "message_stop":
            self._ended = True
            out = self._role()
            if not self._sent_finish:
                out.append(self._finish("end_turn"))
            if self.include_usage and self.usage is not None:
                out.append({**self._chunk({}), "choices": [], "usage": openai_usage(self.usage)})
            return out
        return []

    def _finish(self, reason: str) -> dict[str, Any]:
        self._sent_finish = True
        finish = finish_reason(reason)
        if finish == "tool_calls" and not self._tools and self._json_blocks:
            finish = "stop"
        return self._chunk({}, finish)

    def _block_start(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        index = obj.get("index")
        block = _obj(obj.get("content_block"))
        kind = block.get("type")
        if not isinstance(index, int):
            return []
        if kind == "tool_use" and block.get("name") == JSON_TOOL_NAME:
            self._json_blocks.add(index)
            return []
        if kind == "tool_use":
            position = len(self._tools)
            self._tools[index] = position
            initial = block.get("input")
            call = {
                "index": position,
                "id": str(block.get("id") or ids.tool_call_id()),
                "type": "function",
                "function": {
                    "name": str(block.get("name") or ""),
                    "arguments": _json(initial) if initial else "",
                },
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        if kind == "redacted_thinking" and block.get("data"):
            redacted = {"type": "redacted_thinking", "data": block["data"]}
            return [self._chunk({"thinking_blocks": [redacted]})]
        return []

    def _block_delta(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        index = obj.get("index")
        delta = _obj(obj.get("delta"))
        kind = delta.get("type")
        piece = delta.get(_DELTA_FIELDS.get(str(kind), ""))
        if not isinstance(piece, str) or not piece:
            return []
        if kind == "text_delta" or (kind == "input_json_delta" and index in self._json_blocks):
            return [self._chunk({"content": piece})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": piece})]
        if kind == "signature_delta":
            # Ends the thinking block: its signature, for a client to send the thinking back.
            signed = {"type": "thinking", "thinking": "", "signature": piece}
            return [self._chunk({"thinking_blocks": [signed]})]
        if kind == "input_json_delta" and isinstance(index, int) and index in self._tools:
            call = {"index": self._tools[index], "function": {"arguments": piece}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def finish(self) -> list[dict[str, Any]]:
        """The upstream ended without message_stop: that is a failure, never a clean end."""
        if self._ended:
            return []
        self._ended = True
        return [
            _openai_error(
                "The upstream stream ended before the message was complete.", {"type": "api_error"}
            )
        ]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _openai_error(message: str, error: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": str(error.get("type") or "api_error"),
            "param": None,
            "code": None,
        }
    }


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class OpenAIToAnthropic:
    """OpenAI upstream chunks -> Anthropic ``(event, data)`` pairs.

    Blocks are sequential in Anthropic streams, so a new kind of content (or a new tool call)
    closes the open block. OpenAI does not interleave tool-call fragments; argument fragments for
    a tool call whose block is already closed are dropped.
    """

    def __init__(
        self,
        model: str,
        input_tokens_estimate: int,
        *,
        stop_sequences: Any = None,
        defer_missing_usage: bool = False,
    ) -> None:
        self.model = model
        self.input_tokens_estimate = input_tokens_estimate
        self.stop_sequences = stop_sequences
        # With ``defer_missing_usage``, an end without the upstream's usage holds back
        # message_delta and message_stop (``awaiting_usage``) until ``complete`` is given it.
        self.defer_missing_usage = defer_missing_usage
        self.awaiting_usage = False
        self.id = ids.message_id()
        self.usage: Usage | None = None
        self._stop_sequence: str | None = None
        self._content: list[str] = []  # the answer's text, to see which stop sequence ended it
        self._started = False
        self._ended = False
        self._open: tuple[str, int] | None = None  # (kind, OpenAI tool index or -1)
        self._next_index = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self._stop_reason: str | None = None
        self._has_tool_use = False
        self._output: list[str] = []  # for an output estimate if no usage ever comes

    # --- helpers

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens_estimate,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        index = self._next_index - 1
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open_block(self, kind: str, block: dict[str, Any], key: int = -1) -> list[Event]:
        events = self._close()
        self._open = (kind, key)
        index = self._next_index
        self._next_index += 1
        start = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(("content_block_start", start))
        return events

    def _delta(self, delta: dict[str, Any]) -> Event:
        index = self._next_index - 1
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return ("content_block_delta", event)

    def _error(self, kind: str, message: str) -> list[Event]:
        self._ended = True
        return [("error", {"type": "error", "error": {"type": kind, "message": message}})]

    # --- feeding

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self._ended or not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error:
            return self._error(*_anthropic_error(error))
        events = self._start()
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            events += self._choice(choice)
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = Usage.from_openai(usage)
            if self._stop_reason is not None:
                events += self._end()
        return events

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        delta = _obj(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self._open != ("thinking", -1):
                block = {"type": "thinking", "thinking": "", "signature": ""}
                events += self._open_block("thinking", block)
            events.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            self._output.append(reasoning)
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                if self._open != ("text", -1):
                    events += self._open_block("text", {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
                self._output.append(text)
                self._content.append(text)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                events += self._tool_call(call)
        finish = choice.get("finish_reason")
        if finish:
            events += self._close()
            reason = stop_reason(finish)
            if reason == "end_turn" and self._has_tool_use:
                reason = "tool_use"
            if reason == "end_turn":
                text = "".join(self._content)
                self._stop_sequence = matched_stop_sequence(choice, text, self.stop_sequences)
                if self._stop_sequence is not None:
                    reason = "stop_sequence"
            self._stop_reason = reason
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        key = call.get("index")
        if not isinstance(key, int):
            # No index (some servers): an id starts a new call, else it continues the last one.
            known = max(self._tools, default=-1)
            key = known + 1 if call.get("id") or known < 0 else known
        function = _obj(call.get("function"))
        if key not in self._tools:
            self._tools[key] = self._next_index
            self._has_tool_use = True
            block = {
                "type": "tool_use",
                "id": ids.safe_tool_id(call.get("id")),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            events += self._open_block("tool", block, key)
        elif self._open != ("tool", key):
            return events
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
            self._output.append(arguments)
        return events

    def _end(self) -> list[Event]:
        events = self._start() + self._close()
        if self.usage is not None:
            usage = anthropic_usage(self.usage)
        else:
            usage = {
                "input_tokens": self.input_tokens_estimate,
                "output_tokens": tokens.count_text("".join(self._output)),
            }
        delta = {
            "stop_reason": self._stop_reason or "end_turn",
            "stop_sequence": self._stop_sequence,
        }
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        self._ended = True
        return events

    def feed_done(self) -> list[Event]:
        """``data: [DONE]``: a clean end only if a finish_reason came first."""
        if self._ended:
            return []
        if self._stop_reason is None:
            return self._error("api_error", "The upstream stream ended before a finish_reason.")
        if self.usage is None and self.defer_missing_usage:
            if self.awaiting_usage:
                return []
            self.awaiting_usage = True
            return self._start() + self._close()
        return self._end()

    def complete(self, usage: Usage) -> list[Event]:
        """The held-back end (``awaiting_usage``), with the usage counted for it."""
        if self._ended or not self.awaiting_usage:
            return []
        self.awaiting_usage = False
        self.usage = usage
        return self._end()

    def finish(self) -> list[Event]:
        """The upstream closed without ``[DONE]``: finish if it had finished, else fail."""
        return self.feed_done()


def _anthropic_error(error: Any) -> tuple[str, str]:
    """An OpenAI error chunk's ``error`` -> (Anthropic error type, message)."""
    if not isinstance(error, dict):
        return "api_error", str(error)
    message = str(error.get("message") or "The upstream failed.")
    kind = str(error.get("type") or "")
    code = str(error.get("code") or "")
    if kind in ANTHROPIC_ERROR_TYPES:
        return kind, message
    if "rate_limit" in kind or "rate_limit" in code or code == "429":
        return "rate_limit_error", message
    if "overload" in kind or "overload" in code or code in ("503", "529"):
        return "overloaded_error", message
    return "api_error", message
