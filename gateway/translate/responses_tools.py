"""The Responses API's tools as chat completions function tools, and the calls back.

Chat completions (and Anthropic) know one kind of tool, a function with a JSON-schema input and
a name matching ``^[a-zA-Z0-9_-]{1,64}$``. A Responses request offers more:

- ``namespace`` tools hold function/custom tools: each becomes one function named
  ``{namespace}__{name}``, and a call to it comes back as a ``function_call`` (or
  ``custom_tool_call``) item with ``namespace`` and the tool's own ``name``;
- ``custom`` (freeform) tools take plain text: each becomes a function with one string
  parameter ``input``, and a call comes back as a ``custom_tool_call`` item with ``input``;
- ``local_shell`` becomes a function ``local_shell`` taking the documented ``action`` fields,
  and a call comes back as a ``local_shell_call`` item;
- hosted tools (web search, file search, code interpreter, image generation, computer use, MCP,
  tool search, ...) run on OpenAI's servers, which no upstream here is: they are dropped, and the
  response says so in ``X-TokenFactory-Dropped-Tools``.

Upstream names are a pure function of (namespace, name), so history items from earlier turns map
the same way whichever tools the current request offers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.translate.errors import TranslationError

DROPPED_HEADER = "X-TokenFactory-Dropped-Tools"
LOCAL_SHELL = "local_shell"
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_SEPARATOR = "__"

LOCAL_SHELL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {
            "type": "array",
            "items": {"type": "string"},
            "description": 'The command to run, as argv (e.g. ["bash", "-lc", "ls"]).',
        },
        "working_directory": {"type": "string", "description": "Where to run the command."},
        "timeout_ms": {"type": "integer", "description": "Timeout in milliseconds."},
        "env": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Environment variables to set.",
        },
        "user": {"type": "string", "description": "The user to run the command as."},
    },
    "required": ["command"],
}
CUSTOM_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's input, as raw text."}},
    "required": ["input"],
}


def upstream_name(name: str, namespace: str | None = None) -> str:
    """The function name an upstream sees for tool ``name`` (in ``namespace``): the plain name
    when it is valid, else a sanitized name that still reads well, made unique by a short hash."""
    joined = f"{namespace}{_SEPARATOR}{name}" if namespace else name
    if _NAME.match(joined):
        return joined
    tag = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', joined)[:55]}_{tag}"


@dataclass(frozen=True)
class Target:
    """What an upstream function name stands for in the Responses request."""

    kind: str  # "function", "custom" or "local_shell"
    name: str
    namespace: str | None = None


@dataclass
class ToolMap:
    """The tools of one Responses request: the upstream functions, and how their calls map back."""

    functions: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def target(self, upstream: str) -> Target:
        found = self.targets.get(upstream)
        return found if found is not None else Target("function", upstream)

    def output_item(
        self, item_id: str, call_id: str, upstream: str, arguments: str, status: str
    ) -> dict[str, Any]:
        """The output item for an upstream function call (arguments complete)."""
        target = self.target(upstream)
        if target.kind == "custom":
            item: dict[str, Any] = {
                "id": item_id,
                "type": "custom_tool_call",
                "call_id": call_id,
                "name": target.name,
                "input": custom_input(arguments),
                "status": status,
            }
        elif target.kind == LOCAL_SHELL:
            return {
                "id": item_id,
                "type": "local_shell_call",
                "call_id": call_id,
                "action": shell_action(arguments),
                "status": status,
            }
        else:
            item = {
                "id": item_id,
                "type": "function_call",
                "call_id": call_id,
                "name": target.name,
                "arguments": arguments,
                "status": status,
            }
        if target.namespace:
            item["namespace"] = target.namespace
        return item

    def add(self, target: Target, description: Any, parameters: Any, strict: Any) -> None:
        name = upstream_name(target.name, target.namespace)
        if self.targets.get(name) == target:
            return  # offered twice (in ``tools`` and an ``additional_tools`` item): once is enough
        if name in self.targets:
            raise TranslationError(
                f"Two tools are named '{name}' once flattened for the upstream; rename one.",
                "tools",
            )
        self.targets[name] = target
        function: dict[str, Any] = {"name": name}
        if isinstance(description, str) and description:
            function["description"] = description
        function["parameters"] = parameters or {"type": "object", "properties": {}}
        if isinstance(strict, bool) and target.kind == "function":
            function["strict"] = strict
        self.functions.append({"type": "function", "function": function})


def tool_map(value: Any) -> ToolMap:
    """Map a Responses ``tools`` array. Raises TranslationError on a malformed tool."""
    out = ToolMap()
    if value is None:
        return out
    if not isinstance(value, list):
        raise TranslationError("'tools' must be an array.", "tools")
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"{where} must be an object.", where)
        kind = tool.get("type")
        if kind == "namespace":
            namespace = _name(tool.get("name"), f"{where}.name")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise TranslationError(f"{where}.tools must be an array.", f"{where}.tools")
            preface = tool.get("description")
            for j, member in enumerate(inner):
                here = f"{where}.tools[{j}]"
                if not isinstance(member, dict) or member.get("type") not in ("function", "custom"):
                    raise TranslationError(
                        f"{here}: a namespace holds function and custom tools.", here
                    )
                _member(out, member, here, namespace, preface)
        elif kind in ("function", "custom"):
            _member(out, tool, where, None, None)
        elif kind == LOCAL_SHELL:
            out.add(
                Target(LOCAL_SHELL, LOCAL_SHELL),
                "Run a command on the user's machine and get its output.",
                LOCAL_SHELL_PARAMETERS,
                None,
            )
        elif isinstance(kind, str) and kind:
            if kind not in out.dropped:
                out.dropped.append(kind)
        else:
            raise TranslationError(f"{where}.type must be a string.", f"{where}.type")
    return out


def _member(
    out: ToolMap, tool: dict[str, Any], where: str, namespace: str | None, preface: Any
) -> None:
    name = _name(tool.get("name"), f"{where}.name")
    description = tool.get("description")
    if namespace and isinstance(preface, str) and preface:
        description = f"{preface}\n\n{description}" if description else preface
    if tool["type"] == "custom":
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
            grammar = (
                f"The input must match this {fmt.get('syntax') or ''} grammar:\n{fmt['definition']}"
            )
            description = f"{description}\n\n{grammar}" if description else grammar
        out.add(Target("custom", name, namespace), description, CUSTOM_PARAMETERS, None)
        return
    out.add(
        Target("function", name, namespace),
        description,
        tool.get("parameters"),
        tool.get("strict"),
    )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TranslationError(f"{where} must be a non-empty string.", where)
    return value


def tool_choice(value: Any, tools: ToolMap) -> Any:
    """A Responses ``tool_choice`` for chat completions."""
    if value is None or value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in ("function", "custom") and isinstance(value.get("name"), str):
            namespace = value.get("namespace")
            name = upstream_name(value["name"], namespace if isinstance(namespace, str) else None)
            return {"type": "function", "function": {"name": name}}
        if kind == LOCAL_SHELL:
            return {"type": "function", "function": {"name": LOCAL_SHELL}}
        if isinstance(kind, str) and kind in tools.dropped:
            return "auto"
    raise TranslationError(
        '\'tool_choice\' must be auto, none, required or {"type": "function", "name": ...}.',
        "tool_choice",
    )


def custom_input(arguments: str) -> str:
    """A custom tool's text from the upstream function's arguments (``{"input": "..."}``); an
    upstream that answered with anything else gets its raw arguments passed on."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return parsed["input"]
    return arguments


def shell_action(arguments: str) -> dict[str, Any]:
    """A ``local_shell_call`` action from the upstream function's arguments."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    command = parsed.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    env = parsed.get("env")
    action: dict[str, Any] = {
        "type": "exec",
        "command": [str(part) for part in command] if isinstance(command, list) else [],
        "env": {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
    }
    for name in ("timeout_ms", "working_directory", "user"):
        if parsed.get(name) is not None:
            action[name] = parsed[name]
    return action


def shell_arguments(action: Any) -> str:
    """A ``local_shell_call`` item's action as the upstream function's arguments."""
    fields = {k: v for k, v in action.items() if k != "type"} if isinstance(action, dict) else {}
    return orjson.dumps(fields).decode()


_INPUT_OPENING = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def partial_input(arguments: str) -> str:
    """The part of a custom tool's text already readable in streamed arguments
    (``{"input": "...`` so far): the JSON string decoded up to its last complete character.
    Empty when the arguments do not start that way (the text is then sent whole at the end)."""
    opening = _INPUT_OPENING.match(arguments)
    if opening is None:
        return ""
    out: list[str] = []
    i, end = opening.end(), len(arguments)
    while i < end:
        char = arguments[i]
        if char == '"':
            break
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= end:
            break
        code = arguments[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        if code != "u" or i + 6 > end:
            break
        unit = _hex(arguments[i + 2 : i + 6])
        if 0xD800 <= unit < 0xDC00:  # a surrogate pair: wait for both halves
            low = _hex(arguments[i + 8 : i + 12]) if arguments[i + 6 : i + 8] == "\\u" else -1
            if not 0xDC00 <= low < 0xE000:
                break
            out.append(chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
            i += 12
            continue
        if unit < 0 or 0xDC00 <= unit < 0xE000:  # not hex, or a lone low surrogate
            break
        out.append(chr(unit))
        i += 6
    return "".join(out)


def _hex(digits: str) -> int:
    """Four hex digits as a number; -1 when they are not (or not yet all there)."""
    if len(digits) != 4:
        return -1
    try:
        return int(digits, 16)
    except ValueError:
        return -1
