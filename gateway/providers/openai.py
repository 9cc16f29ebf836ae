"""OpenAI-compatible upstreams: OpenAI, DeepSeek, Groq, Together, Mistral, Gemini's OpenAI
endpoint, vLLM, Ollama, llama.cpp server... and the simulator's OpenAI side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from gateway.catalog import RouteInfo
from gateway.providers.base import Provider


class OpenAIProvider(Provider):
    protocol = "openai"
    paths = {
        "chat": "/chat/completions",
        "embeddings": "/embeddings",
        "transcriptions": "/audio/transcriptions",
        "speech": "/audio/speech",
        "images": "/images/generations",
    }

    def headers(self, route: RouteInfo, forwarded: Mapping[str, str]) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream"}
        if route.api_key and route.auth_style == "api-key":
            headers["api-key"] = route.api_key  # Azure OpenAI
        elif route.api_key and route.auth_style != "none":
            headers["authorization"] = f"Bearer {route.api_key}"
        if "x-request-id" in forwarded:
            # Lets an operator find our request in the upstream's logs (and the simulator's stats).
            headers["x-request-id"] = forwarded["x-request-id"]
        if "x-sim-options" in forwarded:
            headers["x-sim-options"] = forwarded["x-sim-options"]
        return headers

    def url(self, route: RouteInfo, operation: str) -> str:
        if route.url_style == "azure":
            return azure_url(route, self.paths[operation])
        return route.base_url + self.paths[operation]

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return str(error.get("message") or "")
            if isinstance(error, str):
                return error
            if isinstance(body.get("message"), str):
                return str(body["message"])
        return ""


# --- Azure OpenAI ------------------------------------------------------------------------------


def azure_url(route: RouteInfo, path: str) -> str:
    """Azure OpenAI's deployment URL: the route's upstream model is the deployment name,
    ``{base}/openai/deployments/{deployment}{path}?api-version={version}``."""
    deployment = quote(route.upstream_model, safe="")
    url = f"{route.base_url}/openai/deployments/{deployment}{path}"
    return f"{url}?api-version={quote(route.api_version, safe='')}" if route.api_version else url
