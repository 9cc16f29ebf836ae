"""Inference routes: the OpenAI surface at /openai/v1/ and /v1/, the Anthropic one at
/anthropic/v1/ and /v1/messages."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path, re_path

from gateway.views import anthropic, openai, shared

urlpatterns: list[URLPattern | URLResolver] = [
    path("openai/v1/chat/completions", openai.chat_completions),
    path("openai/v1/models", openai.models),
    path("openai/v1/models/<path:model_id>", openai.model_detail),
    path("anthropic/v1/messages", anthropic.messages),
    path("anthropic/v1/messages/count_tokens", anthropic.count_tokens),
    path("anthropic/v1/models", anthropic.models),
    path("anthropic/v1/models/<path:model_id>", anthropic.model_detail),
    path("v1/chat/completions", openai.chat_completions),
    path("v1/messages", anthropic.messages),
    path("v1/messages/count_tokens", anthropic.count_tokens),
    path("v1/models", shared.models),
    path("v1/models/<path:model_id>", shared.model_detail),
    path("", include("gateway.urls_media")),
    path("", include("gateway.urls_batches")),
    path("healthz", shared.healthz),
    path("readyz", shared.readyz),
]

# Included last by tokenfactory/urls.py, so every other route under these prefixes wins.
fallback_patterns: list[URLPattern | URLResolver] = [
    # Leading slashes repeated ("//openai/v1/...") still get a 404 in the surface's envelope.
    re_path(r"^/*openai/", shared.not_found_openai),
    re_path(r"^/*anthropic/", shared.not_found_anthropic),
    re_path(r"^/*v1/", shared.not_found_v1),
]
