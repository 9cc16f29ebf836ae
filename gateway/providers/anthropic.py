"""Anthropic upstreams (and the simulator's Anthropic side)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.catalog import RouteInfo
from gateway.providers.base import Provider

DEFAULT_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    protocol = "anthropic"
    paths = {"chat": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}

    def headers(self, route: RouteInfo, forwarded: Mapping[str, str]) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "anthropic-version": forwarded.get("anthropic-version") or DEFAULT_VERSION,
        }
        if route.api_key:
            headers["x-api-key"] = route.api_key
        beta = forwarded.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if "x-request-id" in forwarded:
            # Lets an operator find our request in the upstream's logs (and the simulator's stats).
            headers["x-request-id"] = forwarded["x-request-id"]
        if "x-sim-options" in forwarded:
            headers["x-sim-options"] = forwarded["x-sim-options"]
        return headers

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return str(error.get("message") or "")
        return ""
