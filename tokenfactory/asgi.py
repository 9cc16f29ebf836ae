"""ASGI entry point: inference paths to a middleware-free Django handler, pages to the full one,
static files to WhiteNoise, websockets (the live meter) to Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from tokenfactory.handlers import MiddlewareFreeASGIHandler, Router, static_app  # noqa: E402
from tokenfactory.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": Router(ASGIHandler(), MiddlewareFreeASGIHandler(), static_app()),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
