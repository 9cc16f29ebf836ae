"""The stateless Responses API (OpenAI's ``POST /v1/responses``) on top of chat completions.

Three pure pieces: a Responses request becomes a chat completions request (which the relay then
sends to an OpenAI upstream as is, or through ``requests.openai_to_anthropic`` to an Anthropic
one); a chat completion becomes a Response object; and chat completion chunks become the
Responses streaming events, in the order the SDK's stream helper insists on.

Choices made:
- stateless only: ``previous_response_id``, ``conversation`` and ``background`` are a 400 (send
  the whole conversation in ``input``); ``store`` is accepted and ignored.
- function tools only; other tool types (web search, file search, computer use, ...) are a 400.
- reasoning items in ``input`` are dropped (their encrypted content is meaningless to another
  model); reasoning the upstream returns becomes a ``reasoning`` item with a summary.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from gateway.translate.errors import TranslationError

_STATELESS = {
    "previous_response_id": "this gateway's Responses API is stateless: send the whole "
    "conversation in 'input' instead of 'previous_response_id'.",
    "conversation": "this gateway's Responses API is stateless: send the whole conversation "
    "in 'input' instead of 'conversation'.",
}
_IGNORED_ITEMS = ("reasoning",)
_ERROR_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- request: Responses -> chat completions -----------------------------------------------------


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request as a chat completions request. Raises TranslationError on what chat
    completions cannot express."""
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
    messages.extend(_input_messages(body.get("input")))
    out["messages"] = messages
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and tools:
        out["tool_choice"] = choice
    if isinstance(body.get("parallel_tool_calls"), bool) and tools:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "stream", "user"):
        if body.get(name) is not None:
            out[name] = body[name]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"):
        out["reasoning_effort"] = reasoning["effort"]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value:
            raise TranslationError("'input' must not be empty.", "input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise TranslationError("'input' must be a string or a non-empty array of items.", "input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object.", where)
        kind = item.get("type") or "message"
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": _string(item.get("call_id"), f"{where}.call_id"),
                "type": "function",
                "function": {
                    "name": _string(item.get("name"), f"{where}.name"),
                    "arguments": item.get("arguments") or "{}",
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
                last["tool_calls"] = [call]
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item.get("call_id"), f"{where}.call_id"),
                    "content": _output_text(item.get("output"), where),
                }
            )
        elif kind in _IGNORED_ITEMS:
            continue
        else:
            raise TranslationError(
                f"{where}: items of type '{kind}' are not supported here; send messages, "
                "function_call and function_call_output items.",
                where,
            )
    return messages


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


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError("'tools' must be an array.", "tools")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise TranslationError(
                f"tools[{i}]: only function tools are supported here, not '{kind}'.", f"tools[{i}]"
            )
        function: dict[str, Any] = {"name": _string(tool.get("name"), f"tools[{i}].name")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and value.get("name"):
        return {"type": "function", "function": {"name": value["name"]}}
    raise TranslationError(
        '\'tool_choice\' must be auto, none, required or {"type": "function", "name": ...}.',
        "tool_choice",
    )


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
    completion: dict[str, Any], request: dict[str, Any], *, model: str, response_id: str = ""
) -> dict[str, Any]:
    """A (non-streamed) chat completion as a Response object."""
    out = skeleton(request, response_id=response_id or new_id("resp"), model=model)
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        items.append(_reasoning_item(new_id("rs"), reasoning))
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
            _call_item(
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


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


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


class ChatToResponses:
    """Feed chat completion chunks (dicts), get Responses events. ``start()`` first; ``done()``
    after the last chunk; ``fail()`` for an error, at any point."""

    def __init__(self, request: dict[str, Any], *, model: str) -> None:
        self.response = skeleton(request, response_id=new_id("resp"), model=model)
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
                events += self._text("reasoning", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text("message", content)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, kind: str, piece: str) -> list[Event]:
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
            self.items.append(_call_item(item.item_id, item.call_id, item.name, "", "in_progress"))
            events.append(self._added(item))
        elif function.get("name") and not item.name:
            item.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.item_id,
                    output_index=item.index,
                    delta=arguments,
                )
            )
        return events

    def _added(self, item: _Open) -> Event:
        snapshot = dict(self.items[item.index])
        if item.kind == "function_call":
            snapshot["name"] = item.name
        return self._event("response.output_item.added", output_index=item.index, item=snapshot)

    def _close(self, item: _Open) -> list[Event]:
        text = "".join(item.text)
        events: list[Event] = []
        if item.kind == "reasoning":
            final = _reasoning_item(item.item_id, text)
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
            final = _call_item(item.item_id, item.call_id, item.name, text, "completed")
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    name=item.name,
                    arguments=text,
                )
            )
        self.items[item.index] = final
        events.append(self._event("response.output_item.done", output_index=item.index, item=final))
        if self.current is item:
            self.current = None
        return events

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
