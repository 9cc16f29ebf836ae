"""Upstream providers, one module per protocol; `get(protocol)` finds the one for a route."""

from __future__ import annotations

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider, UpstreamError
from gateway.providers.openai import OpenAIProvider

_REGISTRY: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
}


def get(protocol: str) -> Provider:
    return _REGISTRY[protocol]


__all__ = ["Provider", "UpstreamError", "get"]
