"""Anthropic upstreams (and the simulator's Anthropic side)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.providers.base import Provider

DEFAULT_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    protocol = "anthropic"
    paths = {"chat": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}

    default_auth = "x-api-key"

    def protocol_headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        # The API version is the protocol's: the caller's when it sent one (its SDK's), else ours.
        return {
            "accept": "application/json, text/event-stream",
            "anthropic-version": forwarded.get("anthropic-version") or DEFAULT_VERSION,
        }

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return str(error.get("message") or "")
        return ""
