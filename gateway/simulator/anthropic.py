"""The Anthropic side: messages (streamed and not, with thinking and tool_use blocks) and
count_tokens."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from gateway.simulator import engine
from gateway.simulator.engine import Prompt, Reply
from gateway.simulator.serving import Call, Frame, Invalid, int_field, sse

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
MODELS = ("sim-claude", "sim-gpt", "sim-reasoner")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def error_body(status: int, message: str, *, request_id: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def prompt(
    body: dict[str, Any], model: str, *, needs_max_tokens: bool = True, per_byte: bool = False
) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise Invalid("messages: must be an array of message objects", "messages")
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            # The API's long-standing rule, kept strict here so a gateway's folding is tested.
            raise Invalid(
                f"messages.{i}.role: Input should be 'user' or 'assistant'", f"messages.{i}.role"
            )
    max_tokens = int_field(body, "max_tokens")
    if needs_max_tokens and max_tokens is None:
        raise Invalid("max_tokens: Field required", "max_tokens")
    last = messages[-1] if messages else {}
    content = last.get("content") if last.get("role") == "user" else None
    raw_tools = body.get("tools")
    tools: list[Any] = raw_tools if isinstance(raw_tools, list) else []
    mode, forced = _tool_choice(body.get("tool_choice"))
    thinking = body.get("thinking")
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    return Prompt(
        user_text=_text(content),
        tool_result=_tool_result(content),
        images=engine.count_images(content),
        tools=tuple(
            engine.Tool(name=str(t.get("name") or ""), schema=t.get("input_schema") or {})
            for t in tools
            if isinstance(t, dict) and t.get("name")
        ),
        tool_mode=mode,
        forced_tool=forced,
        wants_reasoning=thinks or engine.wants_reasoning_by_name(model),
        max_tokens=max_tokens,
        seed=engine.digest(body.get("system"), messages),
        input_tokens=engine.count_input(
            messages=messages, system=body.get("system"), tools=tools, per_byte=per_byte
        ),
    )


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def _text(content: Any) -> str:
    return "".join(str(b.get("text", "")) for b in _blocks(content) if b.get("type") == "text")


def _tool_result(content: Any) -> str | None:
    results = [b for b in _blocks(content) if b.get("type") == "tool_result"]
    if not results:
        return None
    inner = results[-1].get("content")
    return inner if isinstance(inner, str) else _text(inner)


def _tool_choice(choice: Any) -> tuple[Any, str | None]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        return "none", None
    if kind == "any":
        return "required", None
    if kind == "tool":
        return "required", choice.get("name")
    return "auto", None


def _signature(reply: Reply) -> str:
    return signature_of(reply.reasoning_text)


def signature_of(thinking: str) -> str:
    return base64.b64encode(engine.digest("signature", thinking)).decode()


def signed_thinking(body: dict[str, Any]) -> int:
    """Thinking blocks sent back in assistant messages, checked as Anthropic checks them: a
    signature that is not ours for that text is a 400. Returns how many were signed."""
    signed = 0
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict) or block.get("type") != "thinking":
                continue
            if block.get("signature") != signature_of(str(block.get("thinking") or "")):
                where = f"messages.{i}.content.{j}"
                raise Invalid(f"{where}: Invalid `signature` in `thinking` block", where)
            signed += 1
    return signed


def _usage(prompt: Prompt, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _tool_use(reply: Reply, *, with_input: bool) -> dict[str, Any]:
    tool = reply.tool_call
    assert tool is not None
    return {
        "type": "tool_use",
        "id": f"toolu_{tool.id}",
        "name": tool.name,
        "input": tool.input if with_input else {},
    }


async def messages(call: Call) -> None:
    parsed = prompt(call.body, call.model, per_byte=call.knobs.tokenizer == "bytes")
    call.stats.signed_thinking += signed_thinking(call.body)
    reply = engine.plan(parsed, exact_tokens=call.knobs.tokens)
    if call.is_stream:
        await call.play(_events(call, parsed, reply))
        return
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        thinking = reply.reasoning_text
        content.append({"type": "thinking", "thinking": thinking, "signature": _signature(reply)})
    if reply.text:
        content.append({"type": "text", "text": reply.content})
    if reply.tool_call:
        content.append(_tool_use(reply, with_input=True))
    payload = {**_message(call), "content": content, "stop_reason": _STOP_REASONS[reply.finish]}
    if call.knobs.usage:
        payload["usage"] = _usage(parsed, reply.output_tokens)
    await call.reply(payload, input_tokens=parsed.input_tokens, output_tokens=reply.output_tokens)


def _message(call: Call) -> dict[str, Any]:
    return {
        "id": f"msg_{call.response_id}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def _events(call: Call, prompt: Prompt, reply: Reply) -> Iterator[Frame]:
    start = _message(call)
    if call.knobs.usage:
        start["usage"] = _usage(prompt, 0)
    yield Frame(_event("message_start", message=start), input_tokens=prompt.input_tokens)
    index = 0
    if reply.reasoning:
        yield from _block(index, {"type": "thinking", "thinking": "", "signature": ""})
        for token in reply.reasoning:
            yield _delta(index, {"type": "thinking_delta", "thinking": token})
        yield Frame(_event("content_block_delta", index=index, delta=_signature_delta(reply)))
        yield Frame(_event("content_block_stop", index=index))
        index += 1
    if reply.text:
        yield from _block(index, {"type": "text", "text": ""})
        for token in reply.text:
            yield _delta(index, {"type": "text_delta", "text": token})
        yield Frame(_event("content_block_stop", index=index))
        index += 1
    if reply.tool_call:
        tool = reply.tool_call
        opening = _event(
            "content_block_start", index=index, content_block=_tool_use(reply, with_input=False)
        )
        yield Frame(opening, output_tokens=tool.name_tokens)
        for piece in tool.argument_tokens:
            yield _delta(index, {"type": "input_json_delta", "partial_json": piece})
        yield Frame(_event("content_block_stop", index=index))
    delta = {"stop_reason": _STOP_REASONS[reply.finish], "stop_sequence": None}
    usage = {"output_tokens": reply.output_tokens} if call.knobs.usage else None
    yield Frame(_event("message_delta", delta=delta, **({"usage": usage} if usage else {})))
    yield Frame(_event("message_stop"))


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


def _block(index: int, block: dict[str, Any]) -> Iterator[Frame]:
    yield Frame(_event("content_block_start", index=index, content_block=block))
    if index == 0:
        yield Frame(_event("ping"))


def _delta(index: int, delta: dict[str, Any]) -> Frame:
    return Frame(_event("content_block_delta", index=index, delta=delta), output_tokens=1)


def _signature_delta(reply: Reply) -> dict[str, Any]:
    return {"type": "signature_delta", "signature": _signature(reply)}


async def count_tokens(call: Call) -> None:
    parsed = prompt(
        call.body, call.model, needs_max_tokens=False, per_byte=call.knobs.tokenizer == "bytes"
    )
    await call.reply({"input_tokens": parsed.input_tokens})


def models() -> dict[str, Any]:
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": name.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
        }
        for name in MODELS
    ]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
