"""Whole (non-stream) replies from one protocol's shape to the other's, plus the finish-reason and
usage mappings that the stream translators share."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.tokens import Usage
from gateway.translate import ids
from gateway.translate.errors import TranslationError
from gateway.translate.requests import JSON_TOOL_NAME

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: Any) -> str:
    """Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (unknown values end as ``stop``)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# Where OpenAI-compatible servers name the stop string that ended a choice: vLLM's
# ``stop_reason``, SGLang's ``matched_stop``, llama.cpp's ``stopping_word``.
_MATCHED_STOP_FIELDS = ("stop_reason", "matched_stop", "stopping_word")


def matched_stop_sequence(choice: dict[str, Any], text: str, stop_sequences: Any) -> str | None:
    """Which of the caller's ``stop_sequences`` ended an OpenAI choice whose finish_reason is
    ``stop``, or None (a natural end). Real servers leave the stop string out of the text, so:
    the one the upstream names in the choice (``stop_reason``, ``matched_stop`` or
    ``stopping_word``), else the one the text ends with (a server that keeps it); without either
    there is no telling a stop sequence from the model's own end, and it is ``end_turn``."""
    if not isinstance(stop_sequences, list) or choice.get("finish_reason") != "stop":
        return None
    wanted = [seq for seq in stop_sequences if isinstance(seq, str) and seq]
    for name in _MATCHED_STOP_FIELDS:
        value = choice.get(name)
        if isinstance(value, str) and value in wanted:
            return value
    ending = [seq for seq in wanted if text.endswith(seq)]
    return max(ending, key=len) if ending else None


def stop_reason(finish: Any) -> str:
    """OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (unknown or missing: ``end_turn``)."""
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def openai_usage(usage: Usage) -> dict[str, Any]:
    """Our Usage as an OpenAI ``usage`` block; ``prompt_tokens`` includes the cached parts."""
    details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": details,
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def anthropic_usage(usage: Usage) -> dict[str, Any]:
    """Our Usage as an Anthropic ``usage`` block, whose three input parts are disjoint."""
    return usage.to_anthropic()


def tool_input(arguments: Any) -> dict[str, Any]:
    """An OpenAI ``arguments`` string as an Anthropic ``input`` object. Anthropic never takes a
    string there, so anything that is not a JSON object is wrapped as ``{"value": ...}``."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"value": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "thinking",
        "thinking": str(block.get("thinking") or ""),
        "signature": str(block["signature"]),
    }


def anthropic_to_openai(resp: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``."""
    blocks = resp.get("content")
    if not isinstance(blocks, list):
        raise TranslationError("The upstream message has no 'content' array.")
    texts: list[str] = []
    thinking: list[str] = []
    signed: list[dict[str, Any]] = []  # what a client must send back for thinking continuity
    calls: list[dict[str, Any]] = []
    answered_as_json = False
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
            if block.get("signature"):
                signed.append(_thinking_block(block))
        elif kind == "redacted_thinking" and block.get("data"):
            signed.append({"type": "redacted_thinking", "data": block["data"]})
        elif kind == "tool_use" and block.get("name") == JSON_TOOL_NAME:
            # The forced tool that carries a response_format answer: it is the reply's content.
            texts.append(orjson.dumps(block.get("input") or {}).decode())
            answered_as_json = True
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ids.tool_call_id()),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if signed:
        # LiteLLM's field: sent back on an assistant message, it reaches Anthropic as is.
        message["thinking_blocks"] = signed
    finish = finish_reason(resp.get("stop_reason"))
    if finish == "tool_calls" and not calls:
        finish = "stop" if answered_as_json else finish
    out: dict[str, Any] = {
        "id": ids.completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    usage = Usage.from_anthropic(resp.get("usage"))
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict)
        )
    return ""


def openai_to_anthropic(
    resp: dict[str, Any], *, model: str, stop_sequences: Any = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message`` (``stop_sequences``: the
    caller's, to tell which one ended it: ``matched_stop_sequence``)."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("The upstream completion has no choices.")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = list(message.get("tool_calls") or [])
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append({"id": None, "function": legacy})
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": ids.safe_tool_id(call.get("id")),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason = stop_reason(choice.get("finish_reason"))
    if reason == "end_turn" and any(block["type"] == "tool_use" for block in content):
        reason = "tool_use"
    matched = None
    if reason == "end_turn":
        matched = matched_stop_sequence(choice, text, stop_sequences)
        if matched is not None:
            reason = "stop_sequence"
    out: dict[str, Any] = {
        "id": ids.message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": matched,
    }
    usage = Usage.from_openai(resp.get("usage"))
    if usage is not None:
        out["usage"] = anthropic_usage(usage)
    return out
