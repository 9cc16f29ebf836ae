"""OpenAI-compatible upstreams: OpenAI, DeepSeek, Groq, Together, Mistral, Gemini's OpenAI
endpoint, vLLM, Ollama, llama.cpp server... and the simulator's OpenAI side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

    default_auth = "bearer"

    def protocol_headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        return {"accept": "application/json, text/event-stream"}

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
