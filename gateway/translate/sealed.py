"""Reasoning sealed for the client to carry: the Responses API's ``encrypted_content``.

A Responses client that asks for ``include: ["reasoning.encrypted_content"]`` gets, on each
reasoning item, an opaque blob it sends back in the next request's ``input``; that is how
thinking continues across turns when nothing is stored server-side. Here the blob holds the
upstream's signed thinking blocks (Anthropic's ``thinking`` with its ``signature``, or
``redacted_thinking``), encrypted and authenticated with a key derived from the server's secret
(Fernet: AES-CBC and HMAC-SHA256), and bound to one account: a blob another account, another
server or a client made up does not open, and is ignored.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

PREFIX = "tf1."
_PURPOSE = b"tokenfactory.responses.reasoning.v1\x00"


class Sealer:
    """Seals and opens reasoning blobs for one account."""

    def __init__(self, *, secret: str, account: str) -> None:
        key = hashlib.sha256(_PURPOSE + secret.encode()).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(key))
        self.account = account

    def seal(self, blocks: list[dict[str, Any]]) -> str:
        token = self.fernet.encrypt(orjson.dumps({"a": self.account, "b": blocks}))
        return PREFIX + token.decode()

    def open(self, blob: Any) -> list[dict[str, Any]] | None:
        """The thinking blocks in ``blob``, or None when it is not one this sealer made for this
        account (tampered, foreign, or from another provider)."""
        if not isinstance(blob, str) or not blob.startswith(PREFIX):
            return None
        try:
            data = orjson.loads(self.fernet.decrypt(blob[len(PREFIX) :].encode()))
        except (InvalidToken, orjson.JSONDecodeError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("a") != self.account:
            return None
        blocks = data.get("b")
        if not isinstance(blocks, list):
            return None
        return [block for block in blocks if _is_block(block)]


def _is_block(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("type") == "thinking":
        return isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)
    return block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str)
