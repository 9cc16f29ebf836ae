"""Server-sent events: an incremental decoder for upstream bytes and the encoders for both
surfaces (one JSON object per ``data:`` line)."""

from __future__ import annotations

import codecs
import re
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Turns a byte stream split anywhere into ``(event name or None, data)`` pairs.

    Accepts ``\\n``, ``\\r\\n`` and ``\\r`` line ends (also a ``\\r\\n`` split across reads), a
    leading BOM, comments, and multi-line data (joined with ``\\n``). Bytes that are not UTF-8 are
    replaced rather than raised on: the relay must keep going.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._skip_lf = False
        self._at_start = True
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._skip_lf:
            self._skip_lf = False
            text = text.removeprefix("\n")
        buffer = self._pending + text
        lines = _LINE_BREAK.split(buffer)
        self._pending = lines.pop()
        # A "\r" at the very end may be the first half of "\r\n": swallow the "\n" if it follows.
        self._skip_lf = buffer.endswith("\r")
        out: list[tuple[str | None, str]] = []
        for line in lines:
            if not line:
                if self._event is not None or self._data:
                    out.append((self._event, "\n".join(self._data)))
                self._event = None
                self._data = []
                continue
            if line.startswith(":"):
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return out


def encode_openai(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def encode_anthropic(event: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
