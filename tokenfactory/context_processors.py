"""Template context every page gets: the site's name and its two base URLs."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict[str, object]:
    base = request.build_absolute_uri("/").rstrip("/")
    return {
        "SITE_NAME": settings.SITE_NAME,
        "OPENAI_BASE_URL": f"{base}/openai/v1/",
        "ANTHROPIC_BASE_URL": f"{base}/anthropic/",
        "BILLING_ENABLED": bool(settings.STRIPE_SECRET_KEY),
    }
