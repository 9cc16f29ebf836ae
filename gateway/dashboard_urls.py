"""Dashboard pages that belong to the gateway app (usage, batches)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from gateway import dashboard

urlpatterns: list[URLPattern | URLResolver] = [
    path("usage/", dashboard.usage_page, name="usage"),
    path("usage/export.csv", dashboard.usage_csv, name="usage_export"),
]
