"""Batch routes: OpenAI Files and Batches on /openai/v1/ and /v1/, Anthropic Message Batches on
/anthropic/v1/ and /v1/, and the dashboard's batches page."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from gateway import batches_pages
from gateway.views import batches

urlpatterns: list[URLPattern | URLResolver] = []
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
    path("batches/", batches_pages.batches_page, name="batches"),
    path("batches/files/<str:file_id>", batches_pages.download, name="batch_file"),
]
