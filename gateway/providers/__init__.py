"""Upstream providers, one module per protocol; `get(protocol)` finds the one for a route."""

from __future__ import annotations

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider, UpstreamError
from gateway.providers.bedrock import BedrockProvider
from gateway.providers.openai import OpenAIProvider

_REGISTRY: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "bedrock": BedrockProvider(),
}


def get(protocol: str) -> Provider:
    return _REGISTRY[protocol]


def wire_protocol(protocol: str) -> str:
    """The protocol the pipeline builds requests in and reads answers from for ``protocol``'s
    routes: their own, or the one their provider translates from (Bedrock: Anthropic)."""
    provider = _REGISTRY[protocol]
    return provider.speaks or provider.protocol


__all__ = ["Provider", "UpstreamError", "get", "wire_protocol"]
