"""Ids the gateway makes up for the protocol it answers in, and the one tool-id sanitizer."""

from __future__ import annotations

import re
import secrets
import string

_BASE62 = string.ascii_letters + string.digits
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _random(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def completion_id() -> str:
    return "chatcmpl-" + _random(29)


def message_id() -> str:
    return "msg_01" + _random(22)


def tool_use_id() -> str:
    return "toolu_01" + _random(22)


def tool_call_id() -> str:
    return "call_" + _random(24)


def safe_tool_id(value: object) -> str:
    """An id Anthropic accepts (``^[a-zA-Z0-9_-]+$``). Deterministic, because clients send the id
    back in the next request and it must match the one we gave them."""
    if not isinstance(value, str) or not value:
        return tool_use_id()
    value = value.removesuffix("__thought__") or value
    return _UNSAFE.sub("_", value)
