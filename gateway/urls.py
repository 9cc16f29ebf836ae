"""Every gateway route: the OpenAI surface at /openai/v1/ and /v1/, the Anthropic one at
/anthropic/v1/ and /v1/messages (chat, media, files and batches on both), health checks, and the
gateway's dashboard pages (home, activity, the model catalog, usage, batches)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from gateway.pages import activity as activity_pages
from gateway.pages import batches as batches_pages
from gateway.pages import catalog as catalog_pages
from gateway.pages import home as home_pages
from gateway.pages import usage as usage_pages
from gateway.views import anthropic, batches, media, openai, responses, shared

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
]

# Embeddings, audio, images and the Responses API.
for prefix in ("openai/v1/", "v1/"):
    urlpatterns += [
        path(f"{prefix}embeddings", media.embeddings),
        path(f"{prefix}audio/transcriptions", media.transcriptions),
        path(f"{prefix}audio/speech", media.speech),
        path(f"{prefix}images/generations", media.images),
        path(f"{prefix}responses", responses.create),
        path(f"{prefix}responses/input_tokens", responses.input_tokens),
    ]

# OpenAI Files and Batches; Anthropic Message Batches.
for prefix in ("openai/v1/", "v1/"):
    urlpatterns += [
        path(f"{prefix}files", batches.files),
        path(f"{prefix}files/<str:file_id>", batches.file_detail),
        path(f"{prefix}files/<str:file_id>/content", batches.file_content),
        path(f"{prefix}batches", batches.openai_batches),
        path(f"{prefix}batches/<str:batch_id>", batches.openai_batch_detail),
        path(f"{prefix}batches/<str:batch_id>/cancel", batches.openai_batch_cancel),
    ]
for prefix in ("anthropic/v1/", "v1/"):
    urlpatterns += [
        path(f"{prefix}messages/batches", batches.message_batches),
        path(f"{prefix}messages/batches/<str:batch_id>", batches.message_batch_detail),
        path(f"{prefix}messages/batches/<str:batch_id>/cancel", batches.message_batch_cancel),
        path(f"{prefix}messages/batches/<str:batch_id>/results", batches.message_batch_results),
    ]

urlpatterns += [
    path("healthz", shared.healthz),
    path("readyz", shared.readyz),
    # The gateway's dashboard pages.
    path("dashboard/", home_pages.home, name="dashboard"),
    path("activity/", activity_pages.activity_page, name="activity"),
    path("activity/<str:request_id>/", activity_pages.activity_detail, name="activity_detail"),
    path("models/", catalog_pages.catalog_page, name="catalog"),
    path("usage/", usage_pages.usage_page, name="usage"),
    path("usage/export.csv", usage_pages.usage_csv, name="usage_export"),
    path("batches/", batches_pages.batches_page, name="batches"),
    path("batches/files/<str:file_id>", batches_pages.download, name="batch_file"),
]

# Included last by tokenfactory/urls.py, so every other route under these prefixes wins.
fallback_patterns: list[URLPattern | URLResolver] = [
    # Leading slashes repeated ("//openai/v1/...") still get a 404 in the surface's envelope.
    re_path(r"^/*openai/", shared.not_found_openai),
    re_path(r"^/*anthropic/", shared.not_found_anthropic),
    re_path(r"^/*v1/", shared.not_found_v1),
]
