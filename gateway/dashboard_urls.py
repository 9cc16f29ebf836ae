"""Dashboard pages that belong to the gateway app (usage, batches)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from gateway import dashboard

urlpatterns: list[URLPattern | URLResolver] = [
    path("usage/", dashboard.usage_page, name="usage"),
    path("usage/export.csv", dashboard.usage_csv, name="usage_export"),
    # The public API (/v1/usage, /openai/v1/usage, /anthropic/v1/usage, /v1/openapi.json,
    # /v1/docs). It belongs in tokenfactory/urls.py; it is here until that file includes it.
    path("", include("gateway.api")),
]
