"""What the simulator says and how it counts: its tokenizer, the reply rules and the pseudo-text,
all pure functions of the request, so the same request always gets the same answer."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

# A token is a word or one punctuation mark, carrying the whitespace before it, so streamed
# pieces join back into the exact text. Trailing whitespace is a token of its own.
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+$")
_SAY = re.compile(r"\[\[say:\s?(.*?)\]\]", re.DOTALL)
_CALL = re.compile(r"\[\[call:\s*([^\s\]]+)\s*(.*?)\]\]", re.DOTALL)
_PLACE = re.compile(r"\b(?:for|in)\s+([A-Z]\w*)")
_REASONING_MODEL = re.compile(r"reason|r1", re.IGNORECASE)

DEFAULT_REPLY_TOKENS = 24
REASONING_TOKENS = 16
MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 85
# Keys whose string values are ids, markers or payloads rather than prompt text.
_NOT_TEXT = frozenset(
    {"type", "role", "id", "tool_call_id", "tool_use_id", "signature", "data", "file_data", "url"}
)
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})

# Each is one token in common BPE vocabularies too (cl100k: bare, with a leading space, and
# capitalized), so a gateway's own count of this text agrees with ours.
_WORD_LIST = (
    "the a river stone light quiet window paper signal little bright over under silver thread "
    "simple clear winter summer number answer pattern market bridge engine letter forest road "
    "city music color story question reason moment table field house cloud rain wind warm cold "
    "early late open close small large slow fast old new and with from near between water fire "
    "green blue red black white long short high low good great first last next every some many "
    "other world time day night year hand part place case point group problem fact system program "
    "work life way line home school state family power change north south east west sound voice "
    "morning plain kind round deep soft hard dark sun moon star tree lake sea path door wall "
    "glass "
)
_WORDS = tuple(_WORD_LIST.split())

_EXAMPLES: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}

Finish = Literal["stop", "length", "tool"]


# The "another tokenizer" quirk (knob tokenizer=alt): pieces of up to three characters, each
# special token <|...|> one piece, plus a BOS token on a prompt; its chat template is ChatML.
_ALT_TOKEN = re.compile(r"<\|\w+\|>|\s?[^\s<]{1,3}|\s?<|\s+")
ALT_BOS_TOKENS = 1


def count_alt(text: str) -> int:
    return len(_ALT_TOKEN.findall(text))


def chatml(messages: list[Any]) -> str:
    """The alt tokenizer's chat template (string contents; others count as empty)."""
    out = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        out += f"<|im_start|>{message.get('role')}\n{text}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def count_input_alt(messages: list[Any]) -> int:
    """A chat prompt's tokens under the alt tokenizer: its ChatML rendering, with BOS."""
    return ALT_BOS_TOKENS + count_alt(chatml(messages))


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def digest(*parts: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()


_TEXT_BLOCKS = ("text", "input_text", "output_text")


def conversation_seed(*, messages: list[Any], system: Any = None) -> bytes:
    """What seeds a reply: the conversation in one neutral form, so requests that mean the same
    get the same reply however they spell it. A string ``content`` and a list of text blocks with
    the same text are one thing, a system prompt is a leading "system" turn whether it came as
    Anthropic's ``system`` field or an OpenAI system/developer message, and cache marks are
    dropped."""
    turns: list[Any] = []
    if system:
        turns.append(["system", _neutral_blocks(system)])
    for message in messages:
        role = message.get("role")
        rest = {k: v for k, v in message.items() if k not in ("role", "content")}
        turn: list[Any] = [
            "system" if role == "developer" else role,
            _neutral_blocks(message.get("content")),
        ]
        if rest:
            turn.append(rest)
        turns.append(turn)
    return digest(turns)


def _neutral_blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [["text", content]] if content else []
    if not isinstance(content, list):
        return [] if content is None else [content]
    out: list[Any] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in _TEXT_BLOCKS:
            out.append(["text", block.get("text")])
        elif isinstance(block, dict):
            out.append({k: v for k, v in block.items() if k != "cache_control"})
        else:
            out.append(block)
    return out


def pseudo_tokens(seed: bytes, count: int) -> list[str]:
    """`count` tokens of lorem-like English sentences chosen by `seed`, ending in a full stop
    when the length allows."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    out: list[str] = []
    words_left = 0
    while len(out) < count:
        remaining = count - len(out)
        at_start = not out or out[-1] == "."
        if not at_start and (remaining == 1 or words_left == 0):
            out.append(".")
            continue
        if not at_start and remaining > 2 and out[-1] != "," and rng.random() < 0.08:
            out.append(",")
            continue
        word = rng.choice(_WORDS)
        if at_start:
            word = word.capitalize()
            words_left = rng.randint(4, 11)
        out.append(word if not out else f" {word}")
        words_left -= 1
    return out


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Prompt:
    """One chat request in neutral form; each protocol module builds it from its own body."""

    user_text: str  # text of the final message when it comes from the user
    tool_result: str | None  # content of the final message when it is a tool result
    images: int  # images in the final user message
    tools: tuple[Tool, ...]
    tool_mode: Literal["auto", "none", "required"]
    forced_tool: str | None
    wants_reasoning: bool
    max_tokens: int | None
    seed: bytes
    input_tokens: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text

    @property
    def input(self) -> Any:
        return orjson.loads(self.arguments)

    @property
    def name_tokens(self) -> int:
        return count_tokens(self.name)

    @property
    def argument_tokens(self) -> list[str]:
        return tokenize(self.arguments)


@dataclass(frozen=True, slots=True)
class Reply:
    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tool_call: ToolCall | None = None
    finish: Finish = "stop"

    @property
    def output_tokens(self) -> int:
        tool = 0
        if self.tool_call:
            tool = self.tool_call.name_tokens + len(self.tool_call.argument_tokens)
        return len(self.reasoning) + len(self.text) + tool

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def content(self) -> str:
        return "".join(self.text)


def wants_reasoning_by_name(model: str) -> bool:
    return bool(_REASONING_MODEL.search(model))


def plan(prompt: Prompt, *, exact_tokens: int | None) -> Reply:
    """The reply rules, in order: `[[say: ...]]`, a tool result, `[[call: NAME {json}]]` or a
    named tool, images, and otherwise pseudo-text."""
    said = _SAY.search(prompt.user_text)
    if said:
        return _capped(prompt, tokenize(said.group(1)))
    if prompt.tool_result is not None:
        return _capped(prompt, tokenize(f"The tool returned: {prompt.tool_result}."))
    scripted = _scripted_call(prompt)
    if scripted is not None:
        return Reply(tool_call=scripted, finish="tool")
    tool = _chosen_tool(prompt)
    if tool is not None:
        return Reply(tool_call=_call(tool, prompt), finish="tool")
    prefix: list[str] = []
    if prompt.images:
        noun = "image" if prompt.images == 1 else "images"
        prefix = tokenize(f"I see {prompt.images} {noun}.")
    length = DEFAULT_REPLY_TOKENS if exact_tokens is None else exact_tokens
    tokens = pseudo_tokens(prompt.seed, length)
    if prefix and tokens:
        tokens[0] = f" {tokens[0]}"
    return _capped(prompt, prefix + tokens)


def apply_stop(reply: Reply, stops: Any) -> tuple[Reply, str | None]:
    """Cut the reply's text at the first of the ``stop`` strings in it, leaving the stop string
    out (as real servers do); the one that matched, or None."""
    if isinstance(stops, str):
        stops = [stops]
    if not isinstance(stops, list) or reply.tool_call is not None:
        return reply, None
    content = reply.content
    found = [(content.find(s), s) for s in stops if isinstance(s, str) and s and s in content]
    if not found:
        return reply, None
    at, matched = min(found)
    return Reply(reasoning=reply.reasoning, text=tokenize(content[:at]), finish="stop"), matched


def _capped(prompt: Prompt, text: list[str]) -> Reply:
    budget = prompt.max_tokens
    reasoning: list[str] = []
    if prompt.wants_reasoning:
        reasoning = pseudo_tokens(b"think:" + prompt.seed, REASONING_TOKENS)
        if budget is not None:
            reasoning = reasoning[:budget]
            budget -= len(reasoning)
    if budget is not None and len(text) > budget:
        return Reply(reasoning=reasoning, text=text[:budget], finish="length")
    return Reply(reasoning=reasoning, text=text)


def _scripted_call(prompt: Prompt) -> ToolCall | None:
    """`[[call: NAME {"arg": ...}]]` in the user's text: call tool NAME (when it is offered) with
    exactly those arguments, so a test can drive an agent through a real task."""
    if not prompt.tools or prompt.tool_mode == "none":
        return None
    offered = {tool.name for tool in prompt.tools}
    for match in _CALL.finditer(prompt.user_text):
        name, raw = match.group(1), match.group(2).strip()
        if name not in offered:
            continue
        try:
            arguments = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            continue
        if isinstance(arguments, dict):
            call_id = digest(prompt.seed.hex(), name).hex()[:24]
            return ToolCall(id=call_id, name=name, arguments=orjson.dumps(arguments).decode())
    return None


def _chosen_tool(prompt: Prompt) -> Tool | None:
    if not prompt.tools or prompt.tool_mode == "none":
        return None
    by_name = {tool.name: tool for tool in prompt.tools}
    if prompt.forced_tool in by_name:
        return by_name[prompt.forced_tool]
    for tool in prompt.tools:
        if re.search(rf"\b{re.escape(tool.name)}\b", prompt.user_text):
            return tool
    return prompt.tools[0] if prompt.tool_mode == "required" else None


def _call(tool: Tool, prompt: Prompt) -> ToolCall:
    places = iter(_PLACE.findall(prompt.user_text))
    properties = tool.schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in tool.schema.get("required") or []:
        kind = (properties.get(name) or {}).get("type", "string")
        arguments[name] = _example_value(kind, places)
    call_id = digest(prompt.seed.hex(), tool.name).hex()[:24]
    return ToolCall(id=call_id, name=tool.name, arguments=orjson.dumps(arguments).decode())


def _example_value(kind: Any, places: Iterable[str]) -> Any:
    defaults: dict[str, Any] = {
        "integer": 1,
        "number": 1,
        "boolean": True,
        "array": [],
        "object": {},
    }
    if kind in defaults:
        return defaults[kind]
    return next(iter(places), "example")


def count_input(
    *, messages: list[Any], system: Any = None, tools: Any = None, per_byte: bool = False
) -> int:
    """Input tokens of a chat request: every prompt text, each tool definition as JSON, a fixed
    overhead per message and per image. ``per_byte`` counts a token per UTF-8 byte of text."""
    count = _bytes_of if per_byte else count_tokens
    total = MESSAGE_OVERHEAD_TOKENS * len(messages)
    total += sum(count(text) for text in texts(system))
    total += sum(count(text) for text in texts(messages))
    total += IMAGE_TOKENS * count_images(messages)
    if isinstance(tools, list):
        total += sum(count(orjson.dumps(tool).decode()) for tool in tools)
    return total


def _bytes_of(text: str) -> int:
    return len(text.encode())


def texts(value: Any) -> Iterable[str]:
    """Every prompt string inside a message structure (ids, markers and images skipped)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            return
        for key, item in value.items():
            if key not in _NOT_TEXT:
                yield from texts(item)


def count_images(value: Any) -> int:
    if isinstance(value, list):
        return sum(count_images(item) for item in value)
    if isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            return 1
        return sum(count_images(item) for item in value.values())
    return 0
