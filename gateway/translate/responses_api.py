"""The stateless Responses API (OpenAI's ``POST /v1/responses``) on top of chat completions.

Three pure pieces: a Responses request becomes a chat completions request (which the relay then
sends to an OpenAI upstream as is, or through ``requests.openai_to_anthropic`` to an Anthropic
one); a chat completion becomes a Response object; and chat completion chunks become the
Responses streaming events, in the order the SDK's stream helper insists on.

Choices made:
- stateless only: ``previous_response_id``, ``conversation`` and ``background`` are a 400 (send
  the whole conversation in ``input``); ``store`` is accepted and ignored.
- tools: function, namespace, custom and local_shell tools become upstream functions and their
  calls come back as the items the client offered (``responses_tools``); hosted tools are dropped.
- reasoning the upstream returns becomes a ``reasoning`` item with a summary; asked for with
  ``include: ["reasoning.encrypted_content"]``, it also carries the upstream's signed thinking,
  sealed (``sealed.py``), which sent back in ``input`` goes to the upstream again (thinking
  continuity on Anthropic). Reasoning items without a blob we sealed are dropped.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from gateway.translate import responses_tools
from gateway.translate.errors import TranslationError
from gateway.translate.sealed import Sealer

_STATELESS = {
    "previous_response_id": "this gateway's Responses API is stateless: send the whole "
    "conversation in 'input' instead of 'previous_response_id'.",
    "conversation": "this gateway's Responses API is stateless: send the whole conversation "
    "in 'input' instead of 'conversation'.",
}
# Items from earlier turns that carry nothing an upstream here can use: hosted tools' calls (never
# offered upstream, so never made by it) and reasoning without our encrypted content.
_IGNORED_ITEMS = (
    "reasoning",
    "additional_tools",  # its tools join the request's (``_offered_tools``)
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "computer_call",
    "computer_call_output",
    "tool_search_call",
    "tool_search_output",
    "mcp_list_tools",
    "mcp_call",
    "mcp_approval_request",
    "mcp_approval_response",
    "compaction",
)
_ERROR_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- request: Responses -> chat completions -----------------------------------------------------


def to_chat(
    body: dict[str, Any], *, sealer: Sealer | None = None
) -> tuple[dict[str, Any], responses_tools.ToolMap]:
    """A Responses request as a chat completions request, and how its tools map to upstream
    functions and back. Reasoning items whose ``encrypted_content`` ``sealer`` opens put their
    signed thinking back on the assistant turn they belong to. Raises TranslationError on what
    chat completions cannot express."""
    for name, message in _STATELESS.items():
        if body.get(name):
            raise TranslationError(message[0].upper() + message[1:], name)
    if body.get("background"):
        raise TranslationError(
            "'background' responses are not supported; stream instead.", "background"
        )
    out: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise TranslationError("'instructions' must be a string.", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.extend(_input_messages(body.get("input"), sealer))
    out["messages"] = messages
    tools = responses_tools.tool_map(_offered_tools(body))
    if tools.functions:
        out["tools"] = tools.functions
    choice = responses_tools.tool_choice(body.get("tool_choice"), tools)
    if choice is not None and tools.functions:
        out["tool_choice"] = choice
    if isinstance(body.get("parallel_tool_calls"), bool) and tools.functions:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "stream", "user", "safety_identifier"):
        if body.get(name) is not None:
            out[name] = body[name]
    cache_key = body.get("prompt_cache_key")
    if cache_key is not None:
        if not isinstance(cache_key, str):
            raise TranslationError("'prompt_cache_key' must be a string.", "prompt_cache_key")
        out["prompt_cache_key"] = cache_key
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"):
        out["reasoning_effort"] = reasoning["effort"]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out, tools


def _offered_tools(body: dict[str, Any]) -> Any:
    """``tools``, and the tools of ``additional_tools`` input items (Codex's code mode offers its
    tools that way): a chat upstream takes them all with the request."""
    tools = body.get("tools")
    items = body.get("input")
    if not isinstance(items, list):
        return tools
    extra: list[Any] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            offered = item.get("tools")
            extra += offered if isinstance(offered, list) else []
    if not extra:
        return tools
    return [*tools, *extra] if isinstance(tools, list) else extra if tools is None else tools


def _input_messages(value: Any, sealer: Sealer | None) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value:
            raise TranslationError("'input' must not be empty.", "input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise TranslationError("'input' must be a string or a non-empty array of items.", "input")
    messages: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []  # opened from reasoning items, for the next assistant turn
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object.", where)
        kind = item.get("type") or "message"
        if kind == "reasoning" and sealer is not None:
            thinking += sealer.open(item.get("encrypted_content")) or []
        elif kind == "message":
            messages.append(_message(item, where))
        elif kind in _CALLS:
            _append_call(messages, _call(item, kind, where))
        elif kind in _OUTPUTS:
            call_id = item.get("call_id") or item.get("id")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(call_id, f"{where}.call_id"),
                    "content": _output_text(item.get("output"), where),
                }
            )
        elif kind in _IGNORED_ITEMS:
            continue
        else:
            raise TranslationError(
                f"{where}: items of type '{kind}' are not supported here; send messages, "
                "reasoning, function, custom tool and local shell calls and their outputs.",
                where,
            )
        if thinking and messages and messages[-1]["role"] == "assistant":
            messages[-1]["thinking_blocks"] = [*messages[-1].get("thinking_blocks", ()), *thinking]
            thinking = []
    return messages


_CALLS = ("function_call", "custom_tool_call", "local_shell_call")
_OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


def _call(item: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """A call item from an earlier turn as a chat tool call, named as the upstream saw it."""
    call_id = _string(item.get("call_id"), f"{where}.call_id")
    namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
    if kind == "local_shell_call":
        name = responses_tools.LOCAL_SHELL
        arguments = responses_tools.shell_arguments(item.get("action"))
    elif kind == "custom_tool_call":
        name = responses_tools.upstream_name(_string(item.get("name"), f"{where}.name"), namespace)
        text = item.get("input")
        arguments = orjson.dumps({"input": text if isinstance(text, str) else ""}).decode()
    else:
        name = responses_tools.upstream_name(_string(item.get("name"), f"{where}.name"), namespace)
        arguments = item.get("arguments") or "{}"
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _append_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
        last["tool_calls"] = [call]
    elif last is not None and last["role"] == "assistant":
        last["tool_calls"].append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TranslationError(f"{where} must be a non-empty string.", where)
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise TranslationError(
            f"{where}.role must be user, assistant, system or developer.", f"{where}.role"
        )
    if role == "developer":
        role = "system"
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    if role == "assistant":
        text = "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict)
        )
        return {"role": "assistant", "content": text}
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if role == "system":
        return {"role": "system", "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise TranslationError(f"{where} must be an object.", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise TranslationError(
                f"{where}: input_image needs an 'image_url' (a URL or a data URL); file ids are "
                "not supported.",
                where,
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise TranslationError(
                f"{where}: input_file needs 'file_data'; file ids and URLs are not supported.",
                where,
            )
        file: dict[str, Any] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise TranslationError(f"{where}: content parts of type '{kind}' are not supported.", where)


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(p.get("text") or "") for p in output if isinstance(p, dict))
    raise TranslationError(f"{where}.output must be a string or an array.", f"{where}.output")


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        return None
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema: dict[str, Any] = {
            "name": fmt.get("name") or "response",
            "schema": fmt.get("schema"),
        }
        for name in ("strict", "description"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise TranslationError("'text.format.type' must be text, json_object or json_schema.", "text")


# --- response: chat completion -> Response -----------------------------------------------------


def usage(chat_usage: Any) -> dict[str, Any] | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": prompt + completion,
    }


def skeleton(request: dict[str, Any], *, response_id: str, model: str) -> dict[str, Any]:
    """A Response object with no output yet: what response.created carries, and the frame every
    later snapshot fills in."""
    text = request.get("text") if isinstance(request.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _finish_status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def to_response(
    completion: dict[str, Any],
    request: dict[str, Any],
    *,
    model: str,
    tools: responses_tools.ToolMap,
    sealer: Sealer | None = None,
    response_id: str = "",
) -> dict[str, Any]:
    """A (non-streamed) chat completion as a Response object. With ``sealer``, and when the
    request asks for ``reasoning.encrypted_content``, the reasoning item carries the upstream's
    signed thinking, sealed."""
    out = skeleton(request, response_id=response_id or new_id("resp"), model=model)
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    signed = message.get("thinking_blocks")
    sealing = _sealing(request, sealer)
    if reasoning or (sealing is not None and signed):
        item = _reasoning_item(new_id("rs"), reasoning)
        if sealing is not None and isinstance(signed, list) and signed:
            item["encrypted_content"] = sealing.seal(signed)
        items.append(item)
    content = message.get("content")
    if isinstance(content, str) and content:
        items.append(_message_item(new_id("msg"), content, "completed"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        items.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "refusal", "refusal": refusal}],
            }
        )
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(
            tools.output_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                "completed",
            )
        )
    status, incomplete = _finish_status(choice.get("finish_reason"))
    out.update(
        status=status,
        incomplete_details=incomplete,
        output=items,
        usage=usage(completion.get("usage")),
    )
    created = completion.get("created")
    if isinstance(created, int):
        out["created_at"] = created
    return out


def _sealing(request: dict[str, Any], sealer: Sealer | None) -> Sealer | None:
    """``sealer`` when the request asks for encrypted reasoning, else None."""
    include = request.get("include")
    if isinstance(include, list) and "reasoning.encrypted_content" in include:
        return sealer
    return None


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part(text)],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


# --- stream: chat completion chunks -> Responses events ----------------------------------------

Event = tuple[str, dict[str, Any]]


class _Open:
    """One output item being streamed."""

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind = kind
        self.index = index
        self.item_id = item_id
        self.text: list[str] = []
        self.call_id = ""
        self.name = ""
        self.sent = ""  # a custom tool's input sent in deltas so far


class ChatToResponses:
    """Feed chat completion chunks (dicts), get Responses events. ``start()`` first; ``done()``
    after the last chunk; ``fail()`` for an error, at any point."""

    def __init__(
        self,
        request: dict[str, Any],
        *,
        model: str,
        tools: responses_tools.ToolMap,
        sealer: Sealer | None = None,
    ) -> None:
        self.response = skeleton(request, response_id=new_id("resp"), model=model)
        self.tools = tools
        self.sealing = _sealing(request, sealer)
        self.thought: list[str] = []  # reasoning text since the last signed thinking block
        self.signed: list[dict[str, Any]] = []  # signed blocks for the open reasoning item
        self.sequence = 0
        self.items: list[dict[str, Any]] = []
        self.current: _Open | None = None  # the open reasoning or message item
        self.calls: dict[int, _Open] = {}  # open function calls by the chunk's tool index
        self.finish_reason: Any = None
        self.usage: dict[str, Any] | None = None
        self.ended = False

    def _event(self, kind: str, **fields: Any) -> Event:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, payload

    def _snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = orjson.loads(orjson.dumps(self.response))
        return snapshot

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self.ended:
            return []
        events: list[Event] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                if self.sealing is not None:
                    self.thought.append(reasoning)
                events += self._text("reasoning", reasoning)
            for block in delta.get("thinking_blocks") or ():
                if isinstance(block, dict):
                    events += self._signed(block)
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text("message", content)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _signed(self, block: dict[str, Any]) -> list[Event]:
        """A signed thinking block's end (its signature) or a redacted block: kept for the open
        reasoning item's encrypted_content."""
        if self.sealing is None:
            return []
        if block.get("type") == "thinking" and block.get("signature"):
            text, self.thought = "".join(self.thought), []
            signed = {"type": "thinking", "thinking": text, "signature": block["signature"]}
        elif block.get("type") == "redacted_thinking" and block.get("data"):
            signed = {"type": "redacted_thinking", "data": block["data"]}
        else:
            return []
        events = self._open("reasoning")
        self.signed.append(signed)
        return events

    def _text(self, kind: str, piece: str) -> list[Event]:
        events = self._open(kind)
        assert self.current is not None
        item = self.current
        item.text.append(piece)
        if kind == "reasoning":
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=item.item_id,
                    output_index=item.index,
                    summary_index=0,
                    delta=piece,
                )
            )
        else:
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            )
        return events

    def _open(self, kind: str) -> list[Event]:
        """Make the open reasoning or message item one of ``kind``."""
        events: list[Event] = []
        if self.current is not None and self.current.kind != kind:
            events += self._close(self.current)
        if self.current is None:
            item = _Open(kind, len(self.items), new_id("rs" if kind == "reasoning" else "msg"))
            self.current = item
            if kind == "reasoning":
                self.items.append({"id": item.item_id, "type": "reasoning", "summary": []})
                events.append(self._added(item))
                events.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        item_id=item.item_id,
                        output_index=item.index,
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            else:
                self.items.append(
                    {
                        "id": item.item_id,
                        "type": "message",
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    }
                )
                events.append(self._added(item))
                events.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item.item_id,
                        output_index=item.index,
                        content_index=0,
                        part=_text_part(""),
                    )
                )
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        if not isinstance(index, int):
            index = 0
        function = call.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            if self.current is not None:
                events += self._close(self.current)
            item = _Open("function_call", len(self.items), new_id("fc"))
            item.call_id = str(call.get("id") or new_id("call"))
            item.name = str(function.get("name") or "")
            self.calls[index] = item
            self.items.append(
                self.tools.output_item(item.item_id, item.call_id, item.name, "", "in_progress")
            )
            events.append(self._added(item))
        elif function.get("name") and not item.name:
            item.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text.append(arguments)
            kind = self.tools.target(item.name).kind
            if kind == "custom":
                return events + self._custom_delta(item)
            if kind != "function":
                return events  # a shell call's action is sent whole, with output_item.done
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.item_id,
                    output_index=item.index,
                    delta=arguments,
                )
            )
        return events

    def _custom_delta(self, item: _Open) -> list[Event]:
        """The custom tool's text decoded so far, past what was sent: as input deltas."""
        readable = responses_tools.partial_input("".join(item.text))
        if len(readable) <= len(item.sent) or not readable.startswith(item.sent):
            return []
        piece, item.sent = readable[len(item.sent) :], readable
        return [
            self._event(
                "response.custom_tool_call_input.delta",
                item_id=item.item_id,
                output_index=item.index,
                delta=piece,
            )
        ]

    def _added(self, item: _Open) -> Event:
        snapshot = dict(self.items[item.index])
        return self._event("response.output_item.added", output_index=item.index, item=snapshot)

    def _close(self, item: _Open) -> list[Event]:
        text = "".join(item.text)
        events: list[Event] = []
        if item.kind == "reasoning":
            final = _reasoning_item(item.item_id, text)
            if self.sealing is not None and self.signed:
                final["encrypted_content"] = self.sealing.seal(self.signed)
                self.signed = []
            events.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    summary_index=0,
                    text=text,
                )
            )
            events.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": text},
                )
            )
        elif item.kind == "message":
            final = _message_item(item.item_id, text, "completed")
            events.append(
                self._event(
                    "response.output_text.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            events.append(
                self._event(
                    "response.content_part.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    part=_text_part(text),
                )
            )
        else:
            final = self.tools.output_item(item.item_id, item.call_id, item.name, text, "completed")
            events += self._call_done(item, final, text)
        self.items[item.index] = final
        events.append(self._event("response.output_item.done", output_index=item.index, item=final))
        if self.current is item:
            self.current = None
        return events

    def _call_done(self, item: _Open, final: dict[str, Any], text: str) -> list[Event]:
        if final["type"] == "function_call":
            return [
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    name=final["name"],
                    arguments=text,
                )
            ]
        if final["type"] == "custom_tool_call":
            where = {"item_id": item.item_id, "output_index": item.index}
            text = str(final["input"])
            events = []
            rest = text[len(item.sent) :] if text.startswith(item.sent) else ""
            if rest:
                events.append(
                    self._event("response.custom_tool_call_input.delta", **where, delta=rest)
                )
            events.append(self._event("response.custom_tool_call_input.done", **where, input=text))
            return events
        return []  # local_shell_call: its action arrives with output_item.done

    def _close_all(self) -> list[Event]:
        events: list[Event] = []
        open_items = ([self.current] if self.current else []) + list(self.calls.values())
        for item in sorted(open_items, key=lambda i: i.index):
            events += self._close(item)
        self.calls = {}
        return events

    def done(self, *, usage_fallback: dict[str, Any] | None = None) -> list[Event]:
        """The stream ended properly: close what is open and send the final response."""
        if self.ended:
            return []
        events = self._close_all()
        self.ended = True
        status, incomplete = _finish_status(self.finish_reason)
        self.response.update(
            status=status,
            incomplete_details=incomplete,
            output=self.items,
            usage=self.usage or usage_fallback,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self._snapshot()))
        return events

    def fail(self, code: str, message: str) -> list[Event]:
        """The upstream failed mid-stream: close what is open and send response.failed."""
        if self.ended:
            return []
        events = self._close_all()
        self.ended = True
        self.response.update(
            status="failed",
            # The SDK's ResponseError.code is an enum: keep ours only where it fits one.
            error={"code": code if code in _ERROR_CODES else "server_error", "message": message},
            output=self.items,
            usage=self.usage,
        )
        events.append(self._event("response.failed", response=self._snapshot()))
        return events


def encode(event: Event) -> bytes:
    kind, payload = event
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
