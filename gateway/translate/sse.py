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
        # Nearly every upstream ends lines with "\n" alone: str.split is several times faster
        # than the regular expression that also takes "\r\n" and "\r".
        lines = _LINE_BREAK.split(buffer) if "\r" in buffer else buffer.split("\n")
        self._pending = lines.pop()
        # A "\r" at the very end may be the first half of "\r\n": swallow the "\n" if it follows.
        self._skip_lf = buffer.endswith("\r")
        out: list[tuple[str | None, str]] = []
        event, data = self._event, self._data
        for line in lines:
            if not line:
                if event is not None or data:
                    out.append((event, data[0] if len(data) == 1 else "\n".join(data)))
                    event, data = None, []
                continue
            if line[0] == ":":
                continue
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == " " else value)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value[:1] == " " else value
            if name == "event":
                event = value
            elif name == "data":  # a bare "data" line: an empty data line
                data.append(value)
        self._event, self._data = event, data
        return out


def encode_openai(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def encode_anthropic(event: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
