"""Request bodies from one protocol's shape to the other's (chat completions and messages).

Built from an allow-list: fields the target has no use for (seed, penalties, logit_bias, top_k,
cache hints, service tiers, ...) are dropped by not being copied. Fields whose meaning would be lost
(n > 1, logprobs, audio, server tools) raise TranslationError so the client learns what to change.

Choices made where the two protocols leave one open:
- reasoning_effort -> thinking uses the budget form with LiteLLM's buckets (``THINKING_BUDGETS``);
  the reverse maps a budget back with the same thresholds.
- an assistant tool call whose answer is missing from the history gets a placeholder
  ``tool_result`` marked ``is_error`` rather than a 400; an answer to a call that no preceding
  assistant message made is a 400, as OpenAI itself does.
- response_format becomes a forced tool named ``JSON_TOOL_NAME`` whose input is the answer; with
  thinking (which forbids forced tools), or a schema that is not an object, it becomes a system
  instruction instead.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from gateway.translate import ids
from gateway.translate.errors import TranslationError

JSON_TOOL_NAME = "json_tool_call"
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
MIN_THINKING_BUDGET = 1024
OPENAI_MAX_STOP = 4
MISSING_RESULT = "(no result)"
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# --- small shared checks ----------------------------------------------------------------------


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TranslationError(f"'{name}' must be a positive integer.", name)
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TranslationError(f"'{name}' must be a number.", name)
    return value


def _has_text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _data_url(url: str, where: str, field: str) -> tuple[str, str]:
    """``data:<mime>;base64,<data>`` -> (mime, data)."""
    header, comma, data = url[len("data:") :].partition(",")
    params = header.split(";")
    if not comma or "base64" not in params[1:] or not data:
        raise TranslationError(
            f"{where}: {field} data URLs must look like 'data:<type>;base64,<data>'.", where
        )
    return params[0].strip().lower(), data


# --- OpenAI -> Anthropic ----------------------------------------------------------------------


def openai_to_anthropic(
    body: dict[str, Any], *, model: str, default_max_tokens: int, max_output_tokens: int | None
) -> dict[str, Any]:
    """An OpenAI chat completions body as an Anthropic messages body for ``model``."""
    _reject_inexpressible(body)
    system, messages = _openai_messages(body.get("messages"))
    out: dict[str, Any] = {"model": model}

    requested = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    max_tokens = requested or default_max_tokens
    if max_output_tokens:
        max_tokens = min(max_tokens, max_output_tokens)
    thinking = _thinking(body.get("reasoning_effort"), max_tokens, max_output_tokens)
    if thinking is not None:
        out["thinking"], max_tokens = thinking
    out["max_tokens"] = max_tokens

    temperature = _number(body, "temperature")
    if temperature is not None and thinking is None:
        out["temperature"] = min(max(temperature, 0.0), 1.0)
    top_p = _number(body, "top_p")
    if top_p is not None and (thinking is None or top_p >= 0.95):
        out["top_p"] = top_p
    stop = _stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}

    tools = _openai_tools(body)
    choice = _openai_tool_choice(body, tools, thinking=thinking is not None)
    json_mode = _response_format(body.get("response_format"))
    if json_mode is not None:
        schema, instruction = json_mode
        if thinking is not None or schema.get("type") != "object":
            system.append({"type": "text", "text": instruction})
        else:
            tools.append(
                {
                    "name": JSON_TOOL_NAME,
                    "description": "Give your whole answer as this tool's input.",
                    "input_schema": schema,
                }
            )
            choice = {"type": "tool", "name": JSON_TOOL_NAME}
    if tools:
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
    if system:
        if any("cache_control" in block for block in system):
            out["system"] = system
        else:
            out["system"] = "\n\n".join(block["text"] for block in system)
    out["messages"] = messages
    return out


def _reject_inexpressible(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError(
            "This model returns one choice per request: set 'n' to 1 (or leave it out) and send "
            "several requests instead.",
            "n",
        )
    if body.get("logprobs") is True:
        raise TranslationError(
            "This model does not return log probabilities: remove 'logprobs' and 'top_logprobs'.",
            "logprobs",
        )
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError(
            "This model cannot answer with audio: remove 'audio' and the 'audio' modality.",
            "modalities",
        )


def _thinking(
    effort: Any, max_tokens: int, max_output_tokens: int | None
) -> tuple[dict[str, Any], int] | None:
    """reasoning_effort -> (thinking config, max_tokens raised to leave room for the answer)."""
    if effort is None or effort == "none":
        return None
    if effort not in THINKING_BUDGETS:
        allowed = ", ".join(["none", *THINKING_BUDGETS])
        raise TranslationError(f"'reasoning_effort' must be one of {allowed}.", "reasoning_effort")
    budget = THINKING_BUDGETS[effort]
    if max_tokens <= budget:
        max_tokens += budget
        if max_output_tokens:
            max_tokens = min(max_tokens, max_output_tokens)
        budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise TranslationError("'stop' must be a string or an array of strings.", "stop")
    # Anthropic rejects stop sequences that are only whitespace.
    return [item for item in stop if item.strip()]


def _openai_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("tools")
    if raw is None:
        legacy = body.get("functions")
        raw = [{"type": "function", "function": f} for f in legacy] if legacy else []
    if not isinstance(raw, list):
        raise TranslationError("'tools' must be an array of function tools.", "tools")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"{where} must be an object.", where)
        if tool.get("type", "function") != "function":
            raise TranslationError(
                f"{where}: '{tool.get('type')}' tools cannot be sent to this model; "
                "use function tools.",
                f"{where}.type",
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not _has_text(function.get("name")):
            raise TranslationError(f"{where}.function.name is required.", f"{where}.function.name")
        schema = function.get("parameters")
        schema = dict(schema) if isinstance(schema, dict) and schema else dict(_EMPTY_SCHEMA)
        schema.setdefault("type", "object")
        converted: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if isinstance(function.get("description"), str) and function["description"]:
            converted["description"] = function["description"]
        tools.append(converted)
    return tools


def _openai_tool_choice(
    body: dict[str, Any], tools: list[dict[str, Any]], *, thinking: bool
) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None and isinstance(body.get("function_call"), str | dict):
        legacy = body["function_call"]
        choice = legacy if isinstance(legacy, str) else {"type": "function", "function": legacy}
    parallel = body.get("parallel_tool_calls")
    if not tools or (choice is None and parallel is not False):
        return None
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not _has_text(name):
            raise TranslationError(
                "tool_choice.function.name is required.", "tool_choice.function.name"
            )
        out = {"type": "tool", "name": name}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {
            (t.get("function") or {}).get("name")
            for t in allowed.get("tools") or []
            if isinstance(t, dict)
        }
        tools[:] = [tool for tool in tools if tool["name"] in names]
        out = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        raise TranslationError(
            "tool_choice must be 'auto', 'none', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            "tool_choice",
        )
    if thinking and out["type"] != "auto":
        raise TranslationError(
            "With reasoning_effort set, this model cannot be forced to call a tool: use "
            "tool_choice 'auto', or leave out reasoning_effort.",
            "tool_choice",
        )
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _response_format(fmt: Any) -> tuple[dict[str, Any], str] | None:
    """response_format -> (JSON schema of the answer, the same rule as a system instruction)."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    any_object = {"type": "object", "additionalProperties": True, "properties": {}}
    if kind == "text":
        return None
    if kind == "json_object":
        return any_object, "Reply with only a valid JSON object and nothing else."
    if kind == "json_schema" and isinstance(fmt, dict):
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or not schema:
            return any_object, "Reply with only a valid JSON object and nothing else."
        return schema, (
            "Reply with only a JSON value that matches this JSON schema, and nothing else: "
            + orjson.dumps(schema).decode()
        )
    raise TranslationError(
        "response_format.type must be 'text', 'json_object' or 'json_schema'.",
        "response_format.type",
    )


def _openai_messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (system text blocks, alternating Anthropic turns)."""
    if not isinstance(raw, list) or not raw:
        raise TranslationError("'messages' must be a non-empty array.", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    origins: dict[int, str] = {}
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role in ("tool", "function"):
            block = _tool_result(message, where)
            origins[id(block)] = where
            _append(turns, "user", [block])
        else:
            raise TranslationError(
                f"{where}.role: '{role}' is not one of system, developer, user, assistant, tool.",
                f"{where}.role",
            )
    _pair_tool_results(turns, origins)
    if turns and turns[-1]["role"] == "assistant":
        _trim_prefill(turns)
    if not turns:
        raise TranslationError(
            "'messages' needs at least one user message besides the system messages.", "messages"
        )
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [] if not _has_text(content) else [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"{here}: only text parts are allowed here.", here)
        text = part.get("text", part.get("refusal"))
        if _has_text(text):
            blocks.append(_text_block(text, part))
    return blocks


def _text_block(text: str, part: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_blocks(content, where)
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise TranslationError(f"{here} must be an object.", here)
        if kind == "text":
            if _has_text(part.get("text")):
                blocks.append(_text_block(part["text"], part))
        elif kind == "image_url":
            blocks.append(_image_block(part, here))
        elif kind == "file":
            blocks.append(_document_block(part, here))
        elif kind == "input_audio":
            raise TranslationError(f"{here}: this model does not accept audio input.", here)
        else:
            raise TranslationError(f"{here}: unsupported content type '{kind}'.", here)
    return blocks


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{where}: image_url.url is required.", where)
    source: dict[str, Any]
    if url.startswith("data:"):
        media_type, data = _data_url(url, where, "image_url")
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type
        if media_type not in ANTHROPIC_IMAGE_TYPES:
            raise TranslationError(
                f"{where}: image type '{media_type}' is not supported; send "
                + ", ".join(ANTHROPIC_IMAGE_TYPES)
                + ".",
                where,
            )
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise TranslationError(f"{where}: image_url must be a data: URL or an http(s) URL.", where)
    block: dict[str, Any] = {"type": "image", "source": source}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = _dict(part.get("file"))
    data_url = file.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise TranslationError(
            f"{where}: send the file inline as file.file_data "
            "('data:application/pdf;base64,...'); file_id references are not supported here.",
            where,
        )
    media_type, data = _data_url(data_url, where, "file.file_data")
    if media_type != "application/pdf":
        raise TranslationError(
            f"{where}: only PDF files (application/pdf) are supported, not '{media_type}'.", where
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    # Only signed thinking (LiteLLM's thinking_blocks) can go back; reasoning_content cannot.
    for block in message.get("thinking_blocks") or []:
        if isinstance(block, dict) and (
            (block.get("type") == "thinking" and block.get("signature"))
            or (block.get("type") == "redacted_thinking" and block.get("data"))
        ):
            blocks.append(dict(block))
    blocks.extend(_text_blocks(message.get("content"), where))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be an array.", f"{where}.tool_calls")
    for k, call in enumerate(calls):
        here = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not _has_text(function.get("name")):
            raise TranslationError(f"{here}.function.name is required.", f"{here}.function.name")
        if not _has_text(call.get("id")):
            raise TranslationError(f"{here}.id is required.", f"{here}.id")
        blocks.append(
            {
                "type": "tool_use",
                "id": ids.safe_tool_id(call["id"]),
                "name": function["name"],
                "input": _arguments(function.get("arguments"), f"{here}.function.arguments"),
            }
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and _has_text(legacy.get("name")):
        blocks.append(
            {
                "type": "tool_use",
                "id": _legacy_call_id(legacy["name"]),
                "name": legacy["name"],
                "input": _arguments(legacy.get("arguments"), f"{where}.function_call.arguments"),
            }
        )
    return blocks


def _legacy_call_id(name: str) -> str:
    """Deprecated function calls carry no id; derive one so the result can point at the call."""
    return ids.safe_tool_id("call_" + name)


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise TranslationError(f"{where} must be a JSON string.", where)
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise TranslationError(f"{where} is not valid JSON ({exc}).", where) from exc
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    if message.get("role") == "function":
        name = message.get("name")
        if not _has_text(name):
            raise TranslationError(f"{where}.name is required.", f"{where}.name")
        call_id = _legacy_call_id(name)
    else:
        raw_id = message.get("tool_call_id")
        if not _has_text(raw_id):
            raise TranslationError(
                f"{where}.tool_call_id is required on tool messages.", f"{where}.tool_call_id"
            )
        call_id = ids.safe_tool_id(raw_id)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, list):
        parts = _user_blocks(content, where)
        if parts:
            block["content"] = parts
    elif isinstance(content, str) and content:
        block["content"] = content
    elif content is not None and not isinstance(content, str):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    return block


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging it into the previous one of the same role: tool results first, and
    one result per tool_use id (Anthropic rejects two)."""
    if not blocks:
        return
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": blocks})
        return
    merged = turns[-1]["content"] + blocks
    if role == "user":
        results: dict[str, dict[str, Any]] = {}
        others = []
        for block in merged:
            if block.get("type") != "tool_result":
                others.append(block)
                continue
            seen = results.get(block["tool_use_id"])
            if seen is None:
                results[block["tool_use_id"]] = block
            elif "content" in block:
                seen["content"] = _as_blocks(seen.get("content")) + _as_blocks(block["content"])
        merged = [*results.values(), *others]
    turns[-1]["content"] = merged


def _pair_tool_results(turns: list[dict[str, Any]], origins: dict[int, str]) -> None:
    """Every tool_use needs its tool_result in the next user turn, and every tool_result a
    tool_use in the turn before it."""
    previous_calls: list[str] = []
    for turn in turns:
        if turn["role"] == "assistant":
            previous_calls = [b["id"] for b in turn["content"] if b.get("type") == "tool_use"]
            continue
        answered = set()
        for block in turn["content"]:
            if block.get("type") != "tool_result":
                continue
            if block["tool_use_id"] not in previous_calls:
                where = origins.get(id(block), "messages")
                raise TranslationError(
                    f"{where}: this tool message answers tool_call_id "
                    f"'{block['tool_use_id']}', which is not among the tool_calls of the "
                    "assistant message right before it.",
                    f"{where}.tool_call_id",
                )
            answered.add(block["tool_use_id"])
        missing = [
            {"type": "tool_result", "tool_use_id": i, "content": MISSING_RESULT, "is_error": True}
            for i in previous_calls
            if i not in answered
        ]
        turn["content"][:0] = missing
        previous_calls = []


def _trim_prefill(turns: list[dict[str, Any]]) -> None:
    """A final assistant turn is a prefill, and Anthropic rejects one ending in whitespace."""
    blocks = turns[-1]["content"]
    if blocks and blocks[-1].get("type") == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


# --- Anthropic -> OpenAI ----------------------------------------------------------------------


def anthropic_to_openai(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic messages body as an OpenAI chat completions body for ``model`` (without
    ``stream_options``: the caller sets those)."""
    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append(_system_message(system))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("'messages' must be a non-empty array.", "messages")
    # System messages stay where they stand, except that tool results must directly follow the
    # assistant message that called the tools: one just before a turn of tool results waits
    # until after them.
    waiting: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", where)
        role = message.get("role")
        if role == "system":
            if not system_cleared(raw, i):
                waiting.append(_system_message(message.get("content"), f"{where}.content"))
        elif role == "user":
            turn = _anthropic_user(message.get("content"), where)
            results = 0
            while results < len(turn) and turn[results]["role"] == "tool":
                results += 1
            messages.extend([*turn[:results], *waiting, *turn[results:]])
            waiting = []
        elif role == "assistant":
            messages.extend(waiting)
            waiting = []
            messages.append(_anthropic_assistant(message.get("content"), where))
        else:
            raise TranslationError(
                f"{where}.role must be 'user', 'assistant' or 'system', not '{role}'.",
                f"{where}.role",
            )
    messages.extend(waiting)
    if not any(m["role"] != "system" for m in messages):
        raise TranslationError(
            "'messages' needs at least one user message besides the system messages.", "messages"
        )
    out["messages"] = messages

    effort = _reasoning_effort(body.get("thinking"), body.get("output_config"))
    max_tokens = _positive_int(body, "max_tokens")
    if effort is not None:
        out["reasoning_effort"] = effort
        if max_tokens is not None:
            # OpenAI reasoning models only take max_completion_tokens.
            out["max_completion_tokens"] = max_tokens
    elif max_tokens is not None:
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = _number(body, name)
        if value is not None:
            out[name] = value
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError(
                "'stop_sequences' must be an array of strings.", "stop_sequences"
            )
        if len(stop) > OPENAI_MAX_STOP:
            raise TranslationError(
                f"This model accepts at most {OPENAI_MAX_STOP} stop_sequences; send fewer.",
                "stop_sequences",
            )
        out["stop"] = list(stop)
    if body.get("stream") is True:
        out["stream"] = True
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]

    tools = _anthropic_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if choice is not None:
            converted, parallel = _anthropic_tool_choice(choice)
            out["tool_choice"] = converted
            if parallel is False:
                out["parallel_tool_calls"] = False
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "structured_output",
                "schema": _strict_schema(fmt.get("schema") or dict(_EMPTY_SCHEMA)),
                "strict": True,
            },
        }
    return out


def _system_message(system: Any, where: str = "system") -> dict[str, Any]:
    if isinstance(system, str):
        return {"role": "system", "content": system}
    parts = _system_blocks(system, where)
    if any("cache_control" in block for block in parts):
        # Kept as parts so Claude behind an OpenAI-compatible upstream still sees the breakpoints.
        return {
            "role": "system",
            "content": [
                {"type": "text", "text": b.get("text", "")}
                | ({"cache_control": b["cache_control"]} if "cache_control" in b else {})
                for b in parts
            ],
        }
    return {"role": "system", "content": "\n".join(str(b.get("text", "")) for b in parts)}


def _system_blocks(system: Any, where: str) -> list[dict[str, Any]]:
    """An Anthropic system prompt (top-level ``system`` or a system message's content) as its
    text blocks; a string is one block."""
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    if not isinstance(system, list):
        raise TranslationError(f"'{where}' must be a string or an array of text blocks.", where)
    parts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError(f"{where}[{i}] must be a text block.", f"{where}[{i}]")
        if not isinstance(block.get("text"), str):
            raise TranslationError(f"{where}[{i}].text must be a string.", f"{where}[{i}].text")
        parts.append(block)
    return parts


def system_cleared(messages: list[Any], index: int) -> bool:
    """Whether the system message at ``index`` no longer applies: its ``clear_at`` is
    ``next_user_message`` and the user has written since (a user message holding more than tool
    results). The default (``never``) applies on every request."""
    if messages[index].get("clear_at") != "next_user_message":
        return False
    for later in messages[index + 1 :]:
        if isinstance(later, dict) and later.get("role") == "user":
            content = later.get("content")
            if isinstance(content, str) or (
                isinstance(content, list)
                and any(
                    not (isinstance(block, dict) and block.get("type") == "tool_result")
                    for block in content
                )
            ):
                return True
    return False


def fold_system_messages(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic body whose ``messages`` hold system messages (the 2026 SDK's
    ``{"role": "system"}``), for an Anthropic upstream that takes only user and assistant turns.

    Leading system messages join the top-level ``system`` after what it holds. A later one keeps
    its place as text in the conversation, marked as the system's: appended to the user turn
    it follows, or, after an assistant turn, put in the next user turn after its tool results
    (which must come first), or in a user turn of its own at the end. Cleared ones (``clear_at``)
    are dropped. The other keys of a system message (``clear_at``, ``output_config``) are ours."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in raw
    ):
        return body
    leading: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") != "system":
            if waiting and isinstance(message, dict) and message.get("role") == "user":
                message = _with_system_text(message, waiting, at_end=False)
                waiting = []
            elif waiting and isinstance(message, dict) and message.get("role") == "assistant":
                turns.append({"role": "user", "content": waiting})
                waiting = []
            turns.append(message)
            continue
        blocks = _system_blocks(message.get("content"), f"messages[{i}].content")
        if system_cleared(raw, i):
            continue
        if not turns:
            leading.extend(blocks)
        elif turns[-1].get("role") == "user" and not waiting:
            turns[-1] = _with_system_text(turns[-1], [_marked(b) for b in blocks], at_end=True)
        else:
            waiting.extend(_marked(b) for b in blocks)
    if waiting:
        turns.append({"role": "user", "content": waiting})
    if not turns:
        raise TranslationError(
            "'messages' needs at least one user message besides the system messages.", "messages"
        )
    out = {**body, "messages": turns}
    if leading:
        out["system"] = _joined_system(body.get("system"), leading)
    return out


def _marked(block: dict[str, Any]) -> dict[str, Any]:
    marked = {"type": "text", "text": f"<system>\n{block['text']}\n</system>"}
    if "cache_control" in block:
        marked["cache_control"] = block["cache_control"]
    return marked


def _with_system_text(
    message: dict[str, Any], blocks: list[dict[str, Any]], *, at_end: bool
) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return message  # malformed: the upstream says so
    if at_end:
        return {**message, "content": [*content, *blocks]}
    results = 0
    while (
        results < len(content)
        and isinstance(content[results], dict)
        and content[results].get("type") == "tool_result"
    ):
        results += 1
    return {**message, "content": [*content[:results], *blocks, *content[results:]]}


def _joined_system(system: Any, blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The top-level ``system`` followed by ``blocks``: a string while no block carries a
    ``cache_control`` breakpoint, text blocks otherwise."""
    current = _system_blocks(system, "system") if system else []
    merged = [*current, *(dict(b) for b in blocks)]
    if any("cache_control" in b for b in merged):
        return [
            {"type": "text", "text": b["text"]}
            | ({"cache_control": b["cache_control"]} if "cache_control" in b else {})
            for b in merged
        ]
    return "\n\n".join(b["text"] for b in merged)


def _anthropic_user(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict):
            raise TranslationError(f"{here} must be an object.", here)
        if kind == "tool_result":
            results.append(_anthropic_tool_result(block, here, parts))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            parts.append(_anthropic_part(block, here))
    out = results
    if parts:
        if all(part["type"] == "text" for part in parts):
            out.append({"role": "user", "content": "\n".join(part["text"] for part in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _anthropic_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block.get("type")
    source = _dict(block.get("source"))
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url" and isinstance(source.get("url"), str):
            url = source["url"]
        else:
            raise TranslationError(
                f"{where}: an image source must be base64 or url here.", f"{where}.source"
            )
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
            title = block.get("title")
            return {
                "type": "file",
                "file": {
                    "file_data": f"data:application/pdf;base64,{source.get('data')}",
                    "filename": title if isinstance(title, str) and title else "document.pdf",
                },
            }
        if source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data", ""))}
        if source.get("type") == "content" and isinstance(source.get("content"), str):
            return {"type": "text", "text": source["content"]}
        raise TranslationError(
            f"{where}: documents must be sent as base64 PDF or plain text for this model.",
            f"{where}.source",
        )
    raise TranslationError(f"{where}: '{kind}' blocks cannot be sent to this model.", where)


def _anthropic_tool_result(
    block: dict[str, Any], where: str, carried: list[dict[str, Any]]
) -> dict[str, Any]:
    """A tool_result as an OpenAI tool message. OpenAI tool messages hold text only, so images
    move into the user message that follows the tool messages."""
    call_id = block.get("tool_use_id")
    if not _has_text(call_id):
        raise TranslationError(f"{where}.tool_use_id is required.", f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            here = f"{where}.content[{k}]"
            part = _anthropic_part(inner if isinstance(inner, dict) else {}, here)
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                carried.append({"type": "text", "text": f"(attached to tool result {call_id})"})
                carried.append(part)
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _anthropic_assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", f"{where}.content")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict):
            raise TranslationError(f"{here} must be an object.", here)
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking", "")))
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        else:
            raise TranslationError(f"{here}: '{kind}' blocks cannot be sent to this model.", here)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else (None if calls else ""),
    }
    if calls:
        message["tool_calls"] = calls
        # DeepSeek-style thinking models require their reasoning back on tool-call turns.
        if any(reasoning):
            message["reasoning_content"] = "".join(reasoning)
    return message


def _anthropic_tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError("'tools' must be an array.", "tools")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"{where} must be an object.", where)
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(
                f"{where}: the server tool '{tool.get('type')}' is not available with this "
                "model; only custom tools (name, description, input_schema) are.",
                f"{where}.type",
            )
        if not _has_text(tool.get("name")):
            raise TranslationError(f"{where}.name is required.", f"{where}.name")
        schema = tool.get("input_schema")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": schema if isinstance(schema, dict) and schema else dict(_EMPTY_SCHEMA),
        }
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    return tools


def _anthropic_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """tool_choice -> (OpenAI tool_choice, parallel_tool_calls or None to leave it out)."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    disabled = isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True
    parallel = False if disabled else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice, dict) and _has_text(choice.get("name")):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise TranslationError(
        "tool_choice.type must be 'auto', 'any', 'none', or 'tool' with a name.",
        "tool_choice",
    )


def _reasoning_effort(thinking: Any, output_config: Any) -> str | None:
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else 0
        if budget >= THINKING_BUDGETS["high"]:
            return "high"
        if budget >= THINKING_BUDGETS["medium"]:
            return "medium"
        return "low" if budget >= THINKING_BUDGETS["low"] else "minimal"
    if kind == "adaptive":
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        return effort if isinstance(effort, str) and effort else "medium"
    return None


def _strict_schema(schema: Any) -> Any:
    """OpenAI strict mode: every object closed and every property required."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _strict_schema(sub) for name, sub in out[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [_strict_schema(sub) for sub in out[key]]
    if isinstance(out.get("items"), dict):
        out["items"] = _strict_schema(out["items"])
    if out.get("type") == "object" or "properties" in out:
        properties = out.get("properties")
        out["properties"] = properties if isinstance(properties, dict) else {}
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


def strip_unsigned_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic body with the thinking blocks we synthesized from an OpenAI upstream's
    reasoning (empty signature) removed: an Anthropic upstream rejects them, and we cannot sign."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    cleaned = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and message.get("role") == "assistant":
            kept = [
                block
                for block in content
                if not (
                    isinstance(block, dict)
                    and block.get("type") == "thinking"
                    and not block.get("signature")
                )
            ]
            if len(kept) != len(content):
                message = {**message, "content": kept or [{"type": "text", "text": "(thinking)"}]}
        cleaned.append(message)
    return {**body, "messages": cleaned}


def without_thinking_blocks(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the (LiteLLM-style) ``thinking_blocks`` of its assistant messages, which
    only an Anthropic upstream takes; copied only when there are some."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and "thinking_blocks" in m for m in messages
    ):
        return body
    kept = [
        {k: v for k, v in m.items() if k != "thinking_blocks"} if isinstance(m, dict) else m
        for m in messages
    ]
    return {**body, "messages": kept}
