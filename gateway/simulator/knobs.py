"""Per-request latency and fault knobs: read from a `model+k=v` suffix and an `x-sim-options`
header, on top of the server's defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass


class BadKnob(ValueError):
    """An unknown knob or a value that does not parse."""


@dataclass(frozen=True, slots=True)
class Knobs:
    ttft_ms: int = 0  # before the first byte of a stream
    tps: float = 0.0  # tokens per second while streaming; 0 streams as fast as it can
    latency_ms: int = 0  # before a non-stream reply
    slow_ms: int = 0  # extra delay before the first byte, streamed or not
    status: int | None = None  # fail with this HTTP status
    retry_after_s: int = 1  # sent with 429, 503 and 529 failures
    fail_every: int = 0  # every Nth request to this model fails with 500
    drop_after: int | None = None  # streams: close abruptly after N tokens
    linger_ms: int = 0  # streams: hold the body open this long after the last event
    tokens: int | None = None  # exact length of generated text
    usage: bool = True  # usage=none leaves usage out of replies
    echo_headers: bool = False  # x-sim-received-headers on the reply
    error_page: bool = False  # failures answer an HTML page (a proxy's), not a JSON error
    # How input is counted: "words" (default: a word or a punctuation mark is a token), "bytes"
    # (one token per UTF-8 byte of prompt text: the densest any real tokenizer counts, as random
    # text, digits and CJK come close to on real BPE vocabularies), or "alt" (another real
    # server's tokenizer: pieces of up to three characters over a ChatML rendering, its
    # tokenizer endpoints agreeing).
    tokenizer: str = "words"
    # Real servers' quirks (see docs/operating.md):
    uuid_ids: bool = False  # 400 (plain text) unless x-request-id is a UUID, as llama-cpp-python
    stream_usage: bool = True  # stream_usage=0 ignores stream_options.include_usage
    ignore_mct: bool = False  # reads only max_tokens, ignoring max_completion_tokens
    gen_tps: float = 0.0  # slow generation: tokens per second, non-stream answers included

    def first_byte_delay_ms(self, *, stream: bool) -> int:
        return (self.ttft_ms if stream else self.latency_ms) + self.slow_ms

    def fault_status(self, ordinal: int) -> int | None:
        """The status this request fails with, `ordinal` being its 1-based count for the model."""
        if self.status is not None:
            return self.status
        if self.fail_every and ordinal % self.fail_every == 0:
            return 500
        return None


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", "none"):
        return False
    raise ValueError(value)


def _tokenizer(value: str) -> str:
    if value in ("words", "bytes", "alt"):
        return value
    raise ValueError(value)


# knob name -> (field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "ttft": ("ttft_ms", _positive_int),
    "tps": ("tps", float),
    "latency": ("latency_ms", _positive_int),
    "slow": ("slow_ms", _positive_int),
    "status": ("status", _positive_int),
    "retry_after": ("retry_after_s", _positive_int),
    "fail_every": ("fail_every", _positive_int),
    "drop": ("drop_after", _positive_int),
    "linger": ("linger_ms", _positive_int),
    "tokens": ("tokens", _positive_int),
    "usage": ("usage", _flag),
    "echo_headers": ("echo_headers", _flag),
    "error_page": ("error_page", _flag),
    "uuid_ids": ("uuid_ids", _flag),
    "stream_usage": ("stream_usage", _flag),
    "ignore_mct": ("ignore_mct", _flag),
    "tokenizer": ("tokenizer", _tokenizer),
    "gen_tps": ("gen_tps", float),
}


def split_model(model: str) -> tuple[str, dict[str, str]]:
    """`"sim-gpt+status=500+tps=5"` -> `("sim-gpt", {"status": "500", "tps": "5"})`."""
    base, *pairs = model.split("+")
    return base, _pairs(pairs)


def parse_header(value: str) -> dict[str, str]:
    """`"status=500, tps=5"` -> `{"status": "500", "tps": "5"}`."""
    return _pairs(value.split(","))


def _pairs(items: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise BadKnob(f"simulator option {item.strip()!r} is not key=value")
        found[name.strip().lower()] = value.strip()
    return found


def apply(base: Knobs, options: dict[str, str]) -> Knobs:
    changes: dict[str, object] = {}
    for name, raw in options.items():
        if name not in _PARSERS:
            raise BadKnob(f"unknown simulator option {name!r}; known: {', '.join(_PARSERS)}")
        field, parser = _PARSERS[name]
        try:
            changes[field] = parser(raw)
        except ValueError as exc:
            raise BadKnob(f"simulator option {name}={raw!r} is not valid") from exc
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def split_path(path: str) -> tuple[str, dict[str, str]]:
    """`"/knobs/stream_usage=0,tokenizer=alt/v1/chat/completions"` -> the path without the
    prefix and its knobs: a provider whose base URL carries them gets them on every request
    (its tokenizer endpoints too), like a real server's fixed quirks."""
    if not path.startswith("/knobs/"):
        return path, {}
    options, _, rest = path.removeprefix("/knobs/").partition("/")
    return "/" + rest, parse_header(options)


def resolve(model: str, header: str, defaults: Knobs) -> tuple[str, Knobs]:
    """The base model name and the knobs for one request; the header wins over the suffix."""
    base, from_model = split_model(model)
    return base, apply(apply(defaults, from_model), parse_header(header))
