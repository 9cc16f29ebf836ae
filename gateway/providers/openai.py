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
        "completions": "/completions",
        "embeddings": "/embeddings",
        "transcriptions": "/audio/transcriptions",
        "translations": "/audio/translations",
        "speech": "/audio/speech",
        "images": "/images/generations",
        "image_edits": "/images/edits",
        "image_variations": "/images/variations",
    }

    default_auth = "bearer"

    def protocol_headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        return {"accept": "application/json, text/event-stream"}

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
