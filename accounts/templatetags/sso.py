"""``{% sso_providers as providers %}``: the configured OpenID Connect providers (OIDC_PROVIDERS
and the admin's social applications), each with its name and log-in URL, for the log-in page."""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.adapter import get_adapter
from django import template
from django.urls import reverse

register = template.Library()


@register.simple_tag(takes_context=True)
def sso_providers(context: dict[str, Any]) -> list[dict[str, str]]:
    request = context.get("request")
    apps = get_adapter().list_apps(request, provider="openid_connect")
    return [
        {
            "id": app.provider_id,
            "name": app.name,
            "url": reverse("openid_connect_login", kwargs={"provider_id": app.provider_id}),
        }
        for app in apps
        if app.provider_id and not app.settings.get("hidden")
    ]
