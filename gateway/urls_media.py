"""Routes for embeddings, audio, images and the Responses API, on /openai/v1/ and /v1/."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from gateway.views import media, responses

urlpatterns: list[URLPattern | URLResolver] = [
    path("openai/v1/embeddings", media.embeddings),
    path("openai/v1/audio/transcriptions", media.transcriptions),
    path("openai/v1/audio/speech", media.speech),
    path("openai/v1/images/generations", media.images),
    path("openai/v1/responses", responses.create),
    path("v1/embeddings", media.embeddings),
    path("v1/audio/transcriptions", media.transcriptions),
    path("v1/audio/speech", media.speech),
    path("v1/images/generations", media.images),
    path("v1/responses", responses.create),
]
