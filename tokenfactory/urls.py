"""URL map: pages, the dashboard API, the public API and the two inference surfaces."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from gateway.urls import fallback_patterns

# With DEBUG off: JSON in the surface's envelope on the API paths, branded pages elsewhere.
handler404 = "gateway.errors.page_not_found"
handler500 = "gateway.errors.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("gateway.urls")),
    # The documented public API (django-ninja): /v1/usage and its OpenAPI document.
    path("", include("gateway.api")),
    path("", include("accounts.urls")),
    path("billing/", include("billing.urls")),
    # Single sign-on: allauth's OpenID Connect redirect and callback, /accounts/oidc/<id>/login/.
    path("accounts/", include("allauth.socialaccount.providers.openid_connect.urls")),
    *fallback_patterns,
]
