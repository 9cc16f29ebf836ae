"""The legacy text completions API (``POST /v1/completions``): checking a request, and turning it
into chat completions and back for upstreams that do not serve ``/completions`` themselves.

Pure functions; the view in ``gateway/views/completions.py`` runs the pipeline. A model whose
OpenAI-protocol upstream serves ``/completions`` gets the request as sent (``logprobs``,
``suffix``, ``best_of`` included); otherwise each prompt becomes one chat request with the prompt as
its one user message, and what chat cannot express is refused before anything is charged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway import errors

# OpenAI's default when a completions request names no ``max_tokens``: 16, not the model's limit.
DEFAULT_MAX_TOKENS = 16
MAX_CHOICES = 128
MAX_PROMPTS = 2048
MAX_STOP = 4
# Fields a chat request takes with the same meaning.
_CHAT_FIELDS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "n",
)
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}


class Shape(NamedTuple):
    """A completions request, checked: its prompts (text, or token arrays), choices per prompt,
    output tokens per choice, and whether it streams."""

    prompts: list[str | list[int]]
    choices: int
    generated: int  # completions generated per prompt (``best_of`` when larger than ``n``)
    max_tokens: int
    stream: bool
    echo: bool


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(body: dict[str, Any], name: str, default: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise errors.BadRequest(f"'{name}' must be an integer from 1 to {high}.", param=name)
    return value


def check(body: dict[str, Any]) -> Shape:
    """Shape checks made before admission, whatever the upstream."""
    prompt = body.get("prompt")
    prompts: list[Any]
    if isinstance(prompt, str) or (
        isinstance(prompt, list) and prompt and all(_is_token(t) for t in prompt)
    ):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise errors.BadRequest(
            "'prompt' must be a string, an array of strings, an array of tokens, or an array of "
            "token arrays.",
            param="prompt",
        )
    if len(prompts) > MAX_PROMPTS:
        raise errors.BadRequest(
            f"'prompt' holds {len(prompts)} prompts; the limit is {MAX_PROMPTS}.", param="prompt"
        )
    for i, item in enumerate(prompts):
        if not (
            isinstance(item, str) or (isinstance(item, list) and item and all(map(_is_token, item)))
        ):
            raise errors.BadRequest(
                f"prompt[{i}] must be a string or a non-empty array of token ids.", param="prompt"
            )
    choices = _count(body, "n", 1, MAX_CHOICES)
    best_of = _count(body, "best_of", choices, 20)
    if best_of < choices:
        raise errors.BadRequest("'best_of' must be at least 'n'.", param="best_of")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise errors.BadRequest("'max_tokens' must be a non-negative integer.", param="max_tokens")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise errors.BadRequest("'stream' must be true or false.", param="stream")
    if stream and best_of > choices:
        raise errors.BadRequest("'best_of' cannot be used with 'stream'.", param="best_of")
    echo = body.get("echo", False)
    if echo is None:
        echo = False
    if not isinstance(echo, bool):
        raise errors.BadRequest("'echo' must be true or false.", param="echo")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise errors.BadRequest("'stop' must be a string or an array of strings.", param="stop")
        if len(stop) > MAX_STOP:
            raise errors.BadRequest(f"'stop' holds at most {MAX_STOP} sequences.", param="stop")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not _is_token(logprobs) or logprobs > 5):
        raise errors.BadRequest("'logprobs' must be an integer from 0 to 5.", param="logprobs")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise errors.BadRequest("'suffix' must be a string.", param="suffix")
    return Shape(
        prompts=prompts,
        choices=choices,
        generated=best_of,
        max_tokens=max_tokens,
        stream=stream,
        echo=echo,
    )


def check_translatable(body: dict[str, Any], shape: Shape) -> None:
    """What a chat upstream cannot do for a completions request: refused, naming the field."""
    if body.get("logprobs") is not None:
        raise errors.BadRequest(
            "This model is served through chat completions, which cannot return the legacy "
            "'logprobs' shape: leave 'logprobs' out, or use /v1/chat/completions with "
            "'logprobs': true.",
            param="logprobs",
        )
    if body.get("suffix"):
        raise errors.BadRequest(
            "This model is served through chat completions and cannot fill in text before a "
            "'suffix' (insertion needs a model that serves /completions itself).",
            param="suffix",
        )
    if shape.generated > shape.choices:
        raise errors.BadRequest(
            "This model is served through chat completions, which cannot pick the best of "
            "several completions: leave 'best_of' out or set it to 'n'.",
            param="best_of",
        )
    if shape.max_tokens == 0:
        raise errors.BadRequest(
            "This model is served through chat completions, which generates at least one "
            "token: set 'max_tokens' to 1 or more.",
            param="max_tokens",
        )
    if any(not isinstance(p, str) for p in shape.prompts):
        raise errors.BadRequest(
            "This model is served through chat completions, which takes text, not token ids: "
            "send 'prompt' as a string or an array of strings.",
            param="prompt",
        )


def chat_body(body: dict[str, Any], prompt: str, *, stream: bool) -> dict[str, Any]:
    """The chat request for one prompt of a completions request."""
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": DEFAULT_MAX_TOKENS if body.get("max_tokens") is None else body["max_tokens"],
    }
    for name in _CHAT_FIELDS:
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop"] = stop
    if stream:
        out["stream"] = True
        if isinstance(body.get("stream_options"), dict):
            out["stream_options"] = body["stream_options"]
    return out


def finish_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    return _FINISH.get(str(reason), "stop")


def from_chat(
    chat: dict[str, Any], *, prompt: str, echo: bool, index_base: int
) -> list[dict[str, Any]]:
    """The completion choices of one prompt's chat answer, numbered from ``index_base``."""
    out: list[dict[str, Any]] = []
    for position, choice in enumerate(chat.get("choices") or ()):
        message = choice.get("message") or {}
        text = message.get("content") or ""
        if not isinstance(text, str):
            text = ""
        out.append(
            {
                "text": prompt + text if echo else text,
                "index": index_base + int(choice.get("index", position)),
                "logprobs": None,
                "finish_reason": finish_reason(choice.get("finish_reason")) or "stop",
            }
        )
    return out


def chunk_from_chat(chunk: dict[str, Any], *, index_base: int) -> dict[str, Any] | None:
    """One streamed chat chunk as a completions chunk; None for a chunk with nothing to say."""
    choices = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content")
        reason = finish_reason(choice.get("finish_reason"))
        if not text and reason is None:
            continue
        choices.append(
            {
                "text": text if isinstance(text, str) else "",
                "index": index_base + int(choice.get("index", 0)),
                "logprobs": None,
                "finish_reason": reason,
            }
        )
    out: dict[str, Any] = {
        "id": str(chunk.get("id", "")).replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": chunk.get("created"),
        "model": chunk.get("model"),
        "choices": choices,
    }
    if chunk.get("system_fingerprint"):
        out["system_fingerprint"] = chunk["system_fingerprint"]
    if chunk.get("usage"):
        out["usage"] = chunk["usage"]
    elif not choices:
        return None
    return out
